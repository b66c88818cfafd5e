"""A sweep's jobs, seen from the launcher's worker: each in a child process, a journal, one summary line.

:func:`run_sweep_job` is what :func:`mchad.cli.launch.run_task` does with each job of a multirun
(``-m``): a job whose run directory holds the complete results of the same config is skipped
at once (:func:`finished_results`); any other runs in ``python -m mchad.cli.sweep_job``, so
that a job that fails, or whose process dies (``kill -9``, out of memory), writes
``<run_dir>/error.txt`` and fails alone, whatever the launcher (basic, joblib, Ray, submitit).
Each job reports to the sweep's journal; :class:`SweepSummary` prints from it how many of this
invocation's jobs failed and makes the sweep exit with 1. :func:`check_launcher_plugin` is the
pre-flight's check that a chosen launcher's plugin is installed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mchad.cli.sweep_job import ERROR_FILE, RETURN_FILE, Task, job_return
from mchad.errors import ConfigError

log = logging.getLogger(__name__)

JOURNAL_FOLDER = ".sweeps"
SWEEP_ID = "MCHAD_SWEEP_ID"


LAUNCHER_PLUGINS = {"slurm": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
                    "ray": ("hydra_plugins.hydra_ray_launcher", "ray")}  # fmt: skip
"""Extra of this package -> the modules its launchers (``hydra/launcher=slurm*``, ``submitit_*``, ``ray*``) need."""


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def check_launcher_plugin(overrides: Sequence[str]) -> None:
    """Raise a one-line ConfigError for a ``hydra/launcher`` whose optional plugin is not installed."""
    for line in overrides:
        key, _, value = line.partition("=")
        if key.lstrip("+~") != "hydra/launcher":
            continue
        extra = "slurm" if value.startswith(("slurm", "submitit")) else "ray" if value.startswith("ray") else None
        if extra and not all(map(installed, LAUNCHER_PLUGINS[extra])):
            plugin = LAUNCHER_PLUGINS[extra][0].split(".")[1].replace("_", "-")
            raise ConfigError(
                f"hydra/launcher={value} needs the {plugin} plugin, which is not installed: "
                f"pip install 'mchad[{extra}]' (or use hydra/launcher=basic or joblib)"
            )


def finished_results(cfg: DictConfig, run_dir: Path) -> list[dict] | None:
    """The result rows of a finished run of this very config in ``run_dir``, else None.

    Read here, in the launcher's worker, so that re-running a sweep skips a finished job in
    milliseconds instead of a child process that imports the training stack. Anything else
    (no results, another config) is the child's to resume, start or refuse.
    """
    from mchad import rundir
    from mchad.evaluation.results import RESULTS_FILE, read_results, results_complete

    if not (results_complete(run_dir / RESULTS_FILE) and (run_dir / rundir.FINGERPRINT_FILE).is_file()):
        return None
    try:
        rundir.check_fingerprint(run_dir, cfg)
    except ConfigError:
        return None
    log.info("%s is complete, skipping", run_dir / RESULTS_FILE)
    return read_results(run_dir / RESULTS_FILE).to_dict("records")


def run_sweep_job(task: Task, cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """Run one sweep job in a child process, so that its death fails this job alone.

    Returns what the task returned, as the child wrote it (:func:`mchad.cli.sweep_job.job_return`:
    result rows and validation metrics, which a hyperparameter search reads), or None if it failed.
    A finished job of the same config is not run again (:func:`finished_results`).
    """
    # resolved plain containers: the launchers' structured config classes do not pickle across processes
    hydra_node = OmegaConf.create(OmegaConf.to_container(HydraConfig.instance().cfg, resolve=True))
    rows = finished_results(cfg, run_dir)
    returned = job_return(rows) if rows is not None else run_in_child(task, cfg, hydra_node, run_dir)
    journal = Path(hydra_node.hydra.sweep.dir) / JOURNAL_FOLDER / os.environ.get(SWEEP_ID, "unknown")
    journal.mkdir(parents=True, exist_ok=True)
    entry = journal / f"{hydra_node.hydra.job.num}.json"
    entry.write_text(json.dumps({"run_dir": str(run_dir), "status": "failed" if returned is None else "ok"}))
    return returned


def run_in_child(task: Task, cfg: DictConfig, hydra_node: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """Run the job in ``python -m mchad.cli.sweep_job``; what the task returned, or None if it failed."""
    error_file, return_file = run_dir / ERROR_FILE, run_dir / RETURN_FILE
    error_file.unlink(missing_ok=True)
    return_file.unlink(missing_ok=True)
    payload = pickle.dumps((task, cfg, hydra_node, run_dir))
    returncode = run_child([sys.executable, "-m", "mchad.cli.sweep_job"], payload, run_dir)
    if returncode < 0:
        cause = signal.Signals(-returncode).name
        run_dir.mkdir(parents=True, exist_ok=True)
        error_file.write_text(
            f"the job's process was killed by {cause} (out of memory, or killed by hand): run the same sweep "
            "command again to resume it from its last checkpoint\n"
        )
        log.error("run %s died (%s)", run_dir, cause)
    return json.loads(return_file.read_text()) if returncode == 0 and return_file.exists() else None


CHILD_STOP_GRACE_S = 30
"""How long a stopped job's child may take to end after SIGTERM (Lightning stops at the next batch) before SIGKILL."""


def preemption_signal() -> signal.Signals | None:
    """The signal submitit requeues a job on (``SUBMITIT_PREEMPT_SIGNAL``, default USR2), inside a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


def run_child(command: list[str], payload: bytes, run_dir: Path) -> int:
    """Run a sweep job's child process to its end and return its exit status (negative: killed by that signal).

    If this worker stops meanwhile, the child is stopped first, with SIGTERM (Lightning ends training at
    the next batch; ``last.ckpt`` holds the last completed epoch), SIGKILL after
    :data:`CHILD_STOP_GRACE_S`. Under submitit that is how a requeue works (docs/clusters.md): SLURM
    sends USR2 before the time limit (and on preemption), submitit's handler in this process
    requeues the job and raises SystemExit, and the requeued job resumes the run from ``last.ckpt``.
    The child ignores USR2 (SLURM signals every process of the job): the requeue is this process's
    decision. A job out of requeues (``max_num_timeout``) is stopped and fails like any other.
    """
    preemption = preemption_signal()
    ignore = (lambda: signal.signal(preemption, signal.SIG_IGN)) if preemption else None
    with subprocess.Popen(command, stdin=subprocess.PIPE, preexec_fn=ignore) as child:
        try:
            child.communicate(payload)
        except BaseException as stop:
            child.terminate()
            try:
                child.wait(timeout=CHILD_STOP_GRACE_S)
            finally:
                if child.poll() is None:
                    child.kill()
            out_of_requeues = type(stop).__name__ == "UncompletedJobError"  # submitit: timed out too many times
            run_dir.mkdir(parents=True, exist_ok=True)
            then = (
                "raise hydra.launcher.timeout_min or hydra.launcher.max_num_timeout and run the same sweep "
                "command again, which resumes it from its last checkpoint"
                if out_of_requeues
                else "it resumes from its last checkpoint when the job is requeued or the same sweep command runs again"
            )
            (run_dir / ERROR_FILE).write_text(
                f"the job's worker was stopped ({type(stop).__name__}: {stop}), and with it this run: {then}\n"
            )  # fmt: skip
            if out_of_requeues:
                log.error("run %s stopped: %s", run_dir, stop)
                return 1
            raise
    return child.returncode


class SweepSummary(Callback):
    """At the end of a sweep: one line with the number of failed runs; exit status 1 if any failed.

    Only this invocation's jobs count: each reports to ``<sweep_dir>/.sweeps/<id>/`` under an
    id this callback hands to the workers through the environment. Workers that cannot
    inherit it (a Ray cluster started elsewhere) report under ``unknown/``, which counts
    when written after this sweep started.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        os.environ[SWEEP_ID] = self.sweep_id = uuid.uuid4().hex

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            # flushes the Ray jobs' buffered output, so that the summary is the last line printed
            ray.shutdown()
        sweep_dir = Path(config.hydra.sweep.dir)
        journal = sweep_dir / JOURNAL_FOLDER
        entries = list((journal / self.sweep_id).glob("*.json"))
        entries += [p for p in (journal / "unknown").glob("*.json") if p.stat().st_mtime >= self.started]
        jobs = [json.loads(p.read_text()) for p in entries]
        failed = sorted(Path(job["run_dir"]) for job in jobs if job["status"] != "ok")
        for run in failed:
            print(f"FAILED: {run} (see {run / ERROR_FILE})")
        print(
            f"sweep finished: {len(jobs) - len(failed)} of {len(jobs)} runs succeeded, {len(failed)} failed ({sweep_dir})"
        )
        submitit = str(OmegaConf.select(config, "hydra.launcher.submitit_folder", default=""))
        if "%j" in submitit and Path(submitit).is_dir() and not any(Path(submitit).iterdir()):
            Path(submitit).rmdir()  # submitit makes its folder pattern as a folder, which no job uses
        if failed:
            sys.exit(1)
