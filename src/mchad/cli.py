"""What ``run.py`` and ``eval.py`` share: one-line errors for bad input, and sweep jobs that fail alone.

In a single run, a :class:`ConfigError` prints ``error: <message>`` and exits with status 2.
In a multirun (``-m``), a failing job writes its traceback to ``<run_dir>/error.txt`` and
returns, so the launcher (basic, joblib or Ray) goes on with the other jobs; at the end,
:class:`SweepSummary` prints how many runs failed and makes the sweep exit non-zero.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from mchad.config import check_overrides
from mchad.errors import ConfigError

log = logging.getLogger(__name__)

ERROR_FILE = "error.txt"

Task = Callable[[DictConfig, Path], Any]


def check_command_line() -> None:
    """Stop with a one-line error when the command line names an unknown config option.

    Also records the starting directory as ``MCHAD_ROOT`` (``paths.root_dir``), which every
    sweep job inherits, in this process or in a joblib / Ray worker.
    """
    os.environ["MCHAD_ROOT"] = os.getcwd()
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as error:
        sys.exit(f"error: {error}")


def run_task(task: Task, cfg: DictConfig) -> Any:
    """Run ``task(cfg, run_dir)`` with the error handling of single runs and sweeps."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    error_file = run_dir / ERROR_FILE
    error_file.unlink(missing_ok=True)
    try:
        return task(cfg, run_dir)
    except Exception as error:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            if isinstance(error, ConfigError):
                sys.exit(f"error: {error}")
            raise
        run_dir.mkdir(parents=True, exist_ok=True)
        error_file.write_text(traceback.format_exc())
        log.error("run %s failed: %s (traceback in %s)", run_dir, error, error_file)
        return None


class SweepSummary(Callback):
    """At the end of a sweep: one line with the number of failed runs; exit status 1 if any failed.

    Only the jobs of this invocation count: run directories whose config Hydra (re)wrote since
    the sweep started, and error files written since then.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            # flushes the Ray jobs' buffered output, so that the summary is the last line printed
            ray.shutdown()
        sweep_dir = Path(config.hydra.sweep.dir)

        def fresh(pattern: str) -> list[Path]:
            return sorted(p for p in sweep_dir.rglob(pattern) if p.stat().st_mtime >= self.started)

        runs = fresh(".hydra/config.yaml")
        failed = [p.parent for p in fresh(ERROR_FILE)]
        for run in failed:
            print(f"FAILED: {run} (see {run / ERROR_FILE})")
        print(f"sweep finished: {len(runs) - len(failed)} of {len(runs)} runs succeeded, {len(failed)} failed ({sweep_dir})")
        if failed:
            sys.exit(1)
