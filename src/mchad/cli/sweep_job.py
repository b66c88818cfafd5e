"""The child process of one sweep job: ``python -m mchad.cli.sweep_job`` with the pickled job on stdin.

:func:`mchad.cli.sweep.run_sweep_job` starts it, so that a job whose process dies (``kill -9``, out
of memory) fails alone. A plain subprocess, not ``multiprocessing``: the launchers' workers
(joblib's loky, Ray) run under start methods that a nested ``multiprocessing`` child cannot
take over. The child sets up Hydra's state and logging as the parent had them, runs the task,
and on failure writes the traceback to ``<run_dir>/error.txt`` and exits with status 1. On
success it writes what the task returned to ``<run_dir>/job_return.json`` (:func:`job_return`),
which the parent returns to the sweeper: a hyperparameter search reads its objective there.
"""

from __future__ import annotations

import importlib
import json
import logging
import pickle
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log, setup_globals

from mchad.files import atomic_write

ERROR_FILE = "error.txt"
RETURN_FILE = "job_return.json"

Task = Callable[[Any, Path], Any] | str
"""What a job runs, ``task(cfg, run_dir)``: the function, or its name ``"module:function"``, imported when
the job starts (the training stack's import is a run's cost, not a command line's)."""

log = logging.getLogger(__name__)


def main() -> int:
    task, cfg, hydra_node, run_dir = pickle.load(sys.stdin.buffer)
    setup_globals()  # Hydra's resolvers (${hydra:...}, ${now:...}) that the task's config uses
    HydraConfig.instance().cfg = hydra_node
    configure_log(hydra_node.hydra.job_logging, hydra_node.hydra.verbose)
    try:
        result = resolve_task(task)(cfg, run_dir)
    except BaseException as error:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text(traceback.format_exc())
        log.error("run %s failed: %s (traceback in %s)", run_dir, error, run_dir / ERROR_FILE)
        return 1
    run_dir.mkdir(parents=True, exist_ok=True)
    returned = json.dumps(job_return(result), default=lambda v: v.item() if hasattr(v, "item") else str(v))
    atomic_write(run_dir / RETURN_FILE, returned)
    return 0


def resolve_task(task: Task) -> Callable[[Any, Path], Any]:
    """The function a :data:`Task` names."""
    if callable(task):
        return task
    module, _, function = task.partition(":")
    return getattr(importlib.import_module(module), function)


def job_return(result: Any) -> dict[str, Any]:
    """A task's return value as JSON: its result rows, and the validation metrics of a training run
    (:class:`mchad.train.RunResults`)."""
    return {
        "results": list(result) if isinstance(result, list) else [],
        "validation": dict(getattr(result, "validation", None) or {}),
    }


if __name__ == "__main__":
    sys.exit(main())
