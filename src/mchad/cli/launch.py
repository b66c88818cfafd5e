"""The command-line entry points' shared shell: every job checked before Hydra starts, one-line errors.

``launch(task, ...)`` is what ``mchad-train`` and ``mchad-eval`` call. Before Hydra creates anything
it reads the command line (:mod:`mchad.cli.command_line`), composes the config of EVERY job of a sweep
with Hydra's public compose API and checks it (:mod:`mchad.schema`, the task's own ``check``, the
output directory). Bad input, Hydra's refusals included (a sweep without ``-m``, ``--cfg`` with ``-m``,
an unknown flag), ends with ONE line ``error: <what was wrong>: <how to fix it>`` on stderr and exit
status 2, names a failing job by its overrides, and leaves no directory. A
:class:`~mchad.errors.ConfigError` raised later in a single run ends the same way, and the folders
Hydra made for it are removed. Any other exception is a bug or an environment failure: Hydra prints
it and the status is 1. ``HYDRA_FULL_ERROR=1`` adds the traceback before the line.

Each job's config is composed twice, here and by Hydra: Hydra prints its own composition errors
(several lines, exit 1) before any callback sees them, so checking first is the public way to answer
them in one line; a job costs about 0.1 s here. The task is named ``"module:function"`` and imported
when a run starts: ``--help`` and a refused command never load the training stack.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mchad.cli.command_line import Flags, extra_config_dirs, job_overrides, parse
from mchad.cli.sweep import check_launcher_plugin, run_sweep_job
from mchad.cli.sweep_job import Task, resolve_task
from mchad.config import CONFIG_DIR, check_overrides, compose, expand_detectors
from mchad.errors import ConfigError, fail
from mchad.rundir import remove_unfinished

Check = Callable[[DictConfig], None]
"""A task's own checks of one job's composed config, beyond the schema (raise ConfigError)."""


def check_output_dir(target: Path) -> Path:
    """Refuse an output directory that is a file, lies below a file, or cannot be created; return its
    deepest folder that exists: what a refused run keeps."""
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
    return existing


def preflight(
    argv: Sequence[str], job_name: str, defaults: Callable[[list[str]], list[str]] | None, check: Check | None
) -> tuple[list[str], Path | None]:
    """Check ``argv`` and every job's config before Hydra starts (ConfigError naming the first problem);
    return Hydra's command line and the output directory's deepest folder that existed before
    (:func:`check_output_dir`). Commands that only print (``--help``, ``--info`` ...) pass unchecked;
    ``--cfg`` is composed only."""
    args = Flags().read(argv)
    named = any(o.startswith("hydra.job.name=") for o in args.overrides)
    before = [*([] if named else [f"hydra.job.name={job_name}"]), *(defaults(args.overrides) if defaults else [])]
    config_dirs = extra_config_dirs(args)
    overrides = [*before, *expand_detectors(args.overrides, config_dirs)]
    hydra_argv = [*(a for a in argv if a not in args.overrides), *overrides]
    if args.help or args.hydra_help or args.version or args.info or args.shell_completion or args.experimental_rerun:
        return hydra_argv, None
    if args.cfg and args.multirun:
        raise ConfigError("--cfg prints the config of one run and -m starts a sweep: drop -m (and the a,b values)")
    sweep = parse(overrides, args.multirun)
    check_overrides(overrides, config_dirs)  # every job's group options, before composing any
    check_launcher_plugin(overrides)
    [first] = job_overrides(sweep, every_job=False)
    if args.cfg:
        compose(first, config_dirs=config_dirs)
        return hydra_argv, None
    from mchad.loggers import check_packages  # here: the commands above never import the training stack
    from mchad.schema import validate_config

    jobs = [first]  # a basic sweep's other jobs join once the first job's config names the sweeper
    for number, job in enumerate(jobs, 1):
        try:  # the schema, the trackers' packages, the task's own check
            cfg = compose(job, config_dirs=config_dirs)
            validate_config(cfg)
            check_packages(OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") else None)
            if check:
                check(cfg)
        except ConfigError as error:
            if not args.multirun:
                raise
            swept = " ".join(o for o in job if o not in overrides) or " ".join(args.overrides)
            raise ConfigError(f"job {number} ({swept}): {error}") from None
        sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_")) if args.multirun else ""
        if number == 1 and sweeper.endswith(".BasicSweeper"):
            jobs += job_overrides(sweep, every_job=True)[1:]
    if sweeper.startswith("hydra_plugins.mchad_optuna_sweeper."):
        from hydra_plugins.mchad_optuna_sweeper.sweeper import check_search_space

        task_overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
        check_search_space(cfg, task_overrides, config_dirs)  # hparams_search: every trial's values
    return hydra_argv, check_output_dir(Path(cfg.hydra.sweep.dir if args.multirun else cfg.hydra.run.dir).absolute())


def launch(
    task: Task,
    job_name: str,
    argv: Sequence[str] | None = None,
    defaults: Callable[[list[str]], list[str]] | None = None,
    check: Check | None = None,
) -> None:
    """Run ``task`` as a Hydra app over ``argv`` (default: the command line), after :func:`preflight`.

    ``task``: ``"module:function"`` (imported when a run starts) or the function, called as
    ``task(cfg, run_dir)``. ``defaults(overrides)``: overrides put before the user's (e.g.
    ``mchad-eval``'s output directory). ``check(cfg)``: the task's own checks of each job's
    config. Records the starting directory as ``MCHAD_ROOT`` (``paths.root_dir``), which every
    sweep job inherits, in this process or in a joblib / Ray / submitit worker.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ["MCHAD_ROOT"] = os.getcwd()
    try:
        hydra_argv, existing = preflight(argv, job_name, defaults, check)
    except ConfigError as error:
        fail(str(error))

    @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
    def main(cfg: DictConfig) -> Any:
        return run_task(task, cfg, existing)

    saved_argv = sys.argv
    # argv[0] stays the script: DDP starts its other processes by running sys.argv again
    sys.argv = [saved_argv[0], *hydra_argv]
    try:
        main()
    finally:
        sys.argv = saved_argv
        GlobalHydra.instance().clear()


def run_task(task: Task, cfg: DictConfig, existing: Path | None = None) -> Any:
    """Run ``task(cfg, run_dir)``: a single run directly, a sweep job in a child process.

    A single run that fails removes what it made: its directory if it holds no run, and the empty
    folders above it (``logs/runs/<name>/``, ``<run>/eval/``) below ``existing``, which was there before.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir).absolute()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return run_sweep_job(task, cfg, run_dir)
    try:
        return resolve_task(task)(cfg, run_dir)
    except BaseException as error:
        if existing in run_dir.parents:  # else the run directory was there before this command
            remove_unfinished(run_dir)
            made = [folder for folder in (run_dir, *run_dir.parents) if existing in folder.parents]
            with suppress(OSError):  # a folder that is not empty: something else lives there
                for folder in filter(Path.exists, made):
                    folder.rmdir()
        if isinstance(error, ConfigError):
            fail(str(error))
        raise
