"""The command-line entry points' shared shell: checks before Hydra, one-line errors, sweeps that survive.

``launch(task)`` is what ``run.py`` and ``eval.py`` call. Before Hydra creates anything
it parses the command line, composes the config of the first job and checks every
value against :mod:`mchad.schema` and that the output directory can be made: bad input
ends with ONE line ``error: <what was wrong>: <how to fix it>`` on stderr and exit
status 2, and leaves no directory behind. A :class:`~mchad.errors.ConfigError` raised
later in a single run (data, checkpoints, a diverged loss) ends the same way. Any other
exception is a bug or an environment failure: Hydra prints it and the status is 1.
``HYDRA_FULL_ERROR=1`` shows the traceback of every error.

In a multirun (``-m``) every job runs in a child process of the launcher's worker: a
job that fails, or whose process dies (``kill -9``, out of memory), writes
``<run_dir>/error.txt`` and the launcher (basic, joblib, Ray, submitit) goes on with
the other jobs. Each job reports to the sweep's journal; :class:`SweepSummary` prints
from it how many of this invocation's jobs failed and makes the sweep exit with 1.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mchad.cli.sweep_job import ERROR_FILE, RETURN_FILE
from mchad.config import CONFIG_DIR, check_overrides, compose, expand_detectors
from mchad.errors import ConfigError
from mchad.loggers import check_packages

log = logging.getLogger(__name__)

JOURNAL_FOLDER = ".sweeps"
OPTUNA_SWEEPER = "hydra_plugins.mchad_optuna_sweeper."
SWEEP_ID = "MCHAD_SWEEP_ID"

Task = Callable[[DictConfig, Path], Any]


def fail(message: str) -> NoReturn:
    """The one way bad input ends: ``error: <message>`` on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def first_job_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides of a sweep's first job (``seed=1,2`` -> ``seed=1``); a plain run's as they are.

    Raises ConfigError for an override that Hydra's grammar rejects.
    """
    parser = OverridesParser.create()
    first = []
    for line in overrides:
        try:
            [override] = parser.parse_overrides([line])
        except HydraException as error:
            reason = str(error).splitlines()[0].split(" See https://")[0]
            raise ConfigError(f"{line} is not a valid override ({reason}): write key=value, a,b for a sweep") from None
        if not override.is_sweep_override():
            first.append(override.input_line)
        elif override.is_discrete_sweep():
            first.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
    return first


def searchpath_dirs(overrides: Sequence[str]) -> list[Path]:
    """The local folders of a ``hydra.searchpath=[file://DIR,...]`` override: more config groups."""
    for line in overrides:
        if line.startswith("hydra.searchpath="):
            [override] = OverridesParser.create().parse_overrides([line])
            entries = override.value() if isinstance(override.value(), list) else [override.value()]
            return [Path(str(e).removeprefix("file://")) for e in entries if not str(e).startswith("pkg://")]
    return []


def command_line_config_dirs(argv: Sequence[str]) -> list[Path]:
    """The config folders a command line adds: ``--config-dir`` and ``hydra.searchpath``."""
    args, _ = get_args_parser().parse_known_args(list(argv))
    return ([Path(args.config_dir)] if args.config_dir else []) + searchpath_dirs(args.overrides)


def check_output_dir(target: Path) -> None:
    """Refuse an output directory that is a file, lies below a file, or cannot be created."""
    target = target.absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(
            f"{existing} is a file, so the run directory {target} cannot be made: remove or rename it, or choose "
            "another place (paths.log_dir=... or hydra.run.dir=...)"
        )
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".mchad-probe-"))
    except OSError as error:
        raise ConfigError(
            f"cannot create the run directory {target}: {existing} is not writable ({error.strerror}): choose a "
            "writable place (paths.log_dir=... or hydra.run.dir=...)"
        ) from None


LAUNCHER_PLUGINS = {"slurm": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
                    "ray": ("hydra_plugins.hydra_ray_launcher", "ray")}  # fmt: skip
"""Extra of this package -> the modules its launchers (``hydra/launcher=slurm*``, ``submitit_*``, ``ray*``) need."""


def installed(module: str) -> bool:
    import importlib.util

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


def check_command_line(argv: Sequence[str]) -> None:
    """Compose the first job's config, validate it and its output directory (ConfigError if bad).

    Does nothing for the commands that only print (``--help``, ``--cfg``, ``--info`` ...).
    """
    from mchad.schema import validate_config

    args, _ = get_args_parser().parse_known_args(list(argv))
    if args.help or args.hydra_help or args.info or args.cfg or args.shell_completion:
        return
    config_dirs = command_line_config_dirs(argv)
    check_overrides(args.overrides, config_dirs)  # every job's group options, not only the first's
    check_launcher_plugin(args.overrides)
    overrides = first_job_overrides(args.overrides)
    cfg = compose(overrides, config_dirs=config_dirs)
    validate_config(cfg)
    check_packages(OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") else None)
    if args.multirun and str(OmegaConf.select(cfg, "hydra.sweeper._target_")).startswith(OPTUNA_SWEEPER):
        from hydra_plugins.mchad_optuna_sweeper.sweeper import check_search_space

        task_overrides = [o for o in args.overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
        check_search_space(cfg, task_overrides, config_dirs)  # hparams_search: every trial's values, not the first's
    check_output_dir(Path(cfg.hydra.sweep.dir if args.multirun else cfg.hydra.run.dir))


def with_overrides(argv: list[str], extra: list[str]) -> list[str]:
    """``argv`` with the overrides ``extra`` put just before the user's: Hydra's parser takes the overrides as
    one run of positional arguments, so ``--cfg job experiment=x`` and ``experiment=x --cfg job`` both work."""
    first = next((i for i, arg in enumerate(argv) if "=" in arg and not arg.startswith("-")), len(argv))
    return [*argv[:first], *extra, *argv[first:]]


def launch(
    task: Task,
    job_name: str,
    argv: Sequence[str] | None = None,
    defaults: Callable[[list[str]], list[str]] | None = None,
) -> None:
    """Run ``task`` as a Hydra app over ``argv`` (default: the command line), after :func:`check_command_line`.

    ``defaults(argv)``: overrides put before the user's (e.g. ``eval.py``'s output directory).
    Records the starting directory as ``MCHAD_ROOT`` (``paths.root_dir``), which every
    sweep job inherits, in this process or in a joblib / Ray / submitit worker.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = with_overrides(argv, defaults(argv) if defaults else [])
    argv = expand_detectors(argv, command_line_config_dirs(argv))
    os.environ["MCHAD_ROOT"] = os.getcwd()
    try:
        check_command_line(argv)
    except ConfigError as error:
        fail(str(error))

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def main(cfg: DictConfig) -> Any:
        return run_task(task, cfg)

    saved_argv = sys.argv
    # argv[0] stays the script: DDP starts its other processes by running sys.argv again
    name = f"hydra.job.name={job_name}"
    sys.argv = [saved_argv[0], *with_overrides(argv, [] if name in argv else [name])]
    try:
        main()
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()


def run_task(task: Task, cfg: DictConfig) -> Any:
    """Run ``task(cfg, run_dir)``: a single run directly, a sweep job in a child process."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        try:
            return task(cfg, run_dir)
        except ConfigError as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            fail(str(error))
    return run_sweep_job(task, cfg, run_dir)


def run_sweep_job(task: Task, cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """Run one sweep job in a child process, so that its death fails this job alone.

    Returns what the task returned, as the child wrote it (:func:`mchad.cli.sweep_job.job_return`:
    result rows and validation metrics, which a hyperparameter search reads), or None if it failed.
    """
    error_file, return_file = run_dir / ERROR_FILE, run_dir / RETURN_FILE
    error_file.unlink(missing_ok=True)
    return_file.unlink(missing_ok=True)
    # resolved plain containers: the launchers' structured config classes do not pickle across processes
    hydra_node = OmegaConf.create(OmegaConf.to_container(HydraConfig.instance().cfg, resolve=True))
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
    status = "ok" if returncode == 0 else "failed"
    journal = Path(hydra_node.hydra.sweep.dir) / JOURNAL_FOLDER / os.environ.get(SWEEP_ID, "unknown")
    journal.mkdir(parents=True, exist_ok=True)
    entry = journal / f"{hydra_node.hydra.job.num}.json"
    entry.write_text(json.dumps({"run_dir": str(run_dir), "status": status}))
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
        if failed:
            sys.exit(1)
