"""Find the run directories of one or many sweeps and read the results of the finished ones.

A directory is a *run* when it holds any of the files a run leaves behind:
``.hydra/config.yaml`` (it started), ``checkpoints/`` (it trained), ``error.txt`` (it
crashed) or ``results.csv`` (it evaluated). Its status is

- ``complete``: ``results.csv`` exists and parses with every column of the results schema;
- ``failed``: not complete, and ``error.txt`` exists;
- ``incomplete``: anything else (still running, killed, or a truncated ``results.csv``).

Only complete runs are ever averaged; the others are listed so that a missing seed is seen.

A run's *variant* is what its command line changed besides the seed: Hydra's
``override_dirname`` of the job (the overrides minus the keys excluded from directory
names in ``config/hydra/default.yaml``: experiment, tag, paths, data roots, launcher,
...) without ``seed=...``, e.g. ``method.margin=8`` for one point of an ablation grid
and ``""`` for the experiment as configured. Seeds of one variant are averaged together.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from mchad.errors import ConfigError
from mchad.evaluation.results import RESULT_COLUMNS, read_results, results_complete

COMPLETE, INCOMPLETE, FAILED = "complete", "incomplete", "failed"
RUN_COLUMNS = ["run_dir", "status", "detail"]

PathLike = str | os.PathLike
Dirs = PathLike | Iterable[PathLike]


def _as_dirs(dirs: Dirs) -> list[Path]:
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    paths = [Path(d) for d in dirs]
    for path in paths:
        if not path.is_dir():
            raise ConfigError(
                f"results directory {path} does not exist: pass a sweep or run directory, e.g. logs/multiruns"
            )
    return paths


def is_run_dir(path: Path) -> bool:
    return (
        (path / ".hydra" / "config.yaml").is_file()
        or (path / "results.csv").is_file()
        or (path / "error.txt").is_file()
        or (path / "checkpoints").is_dir()
    )


def _run_dirs(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, _ in os.walk(root):
        # Hidden folders (.hydra, .git) and checkpoints/ never hold runs; sorting keeps the listing stable.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "checkpoints")
        if is_run_dir(Path(dirpath)):
            yield Path(dirpath)


def _last_line(path: Path) -> str:
    """The last non-empty line of a file: for a traceback, the exception and its message."""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "error.txt is empty"


def run_status(run_dir: Path) -> tuple[str, str]:
    """(status, detail) of one run directory; detail says why a run is not complete."""
    results = run_dir / "results.csv"
    if results_complete(results):
        return COMPLETE, ""
    if (run_dir / "error.txt").is_file():
        return FAILED, _last_line(run_dir / "error.txt")
    if results.is_file():
        return INCOMPLETE, "results.csv does not parse or lacks columns"
    if (run_dir / "checkpoints").is_dir():
        return INCOMPLETE, "checkpoints but no results.csv"
    return INCOMPLETE, "no results.csv"


def find_runs(dirs: Dirs) -> pd.DataFrame:
    """Every run directory under ``dirs`` (searched recursively), one row each: run_dir, status, detail."""
    found = {path.resolve() for root in _as_dirs(dirs) for path in _run_dirs(root)}
    rows = [(str(path), *run_status(path)) for path in sorted(found)]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_variant(run_dir: Path) -> str:
    """The overrides of a run besides its seed, as Hydra names job directories (see the module docstring).

    ``""`` for a run without ``.hydra/`` (written by something other than ``run.py``).
    """
    hydra_file, overrides_file = run_dir / ".hydra" / "hydra.yaml", run_dir / ".hydra" / "overrides.yaml"
    if not hydra_file.is_file() or not overrides_file.is_file():
        return ""
    naming = OmegaConf.load(hydra_file).hydra.job.config.override_dirname
    excluded = {*naming.exclude_keys, "seed"}
    kept = [o for o in OmegaConf.load(overrides_file) if o.split("=", 1)[0].lstrip("+~") not in excluded]
    return naming.item_sep.join(sorted(kept))


def read_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The results.csv rows of the complete runs in ``runs`` (a :func:`find_runs` frame), concatenated,
    with each run's ``variant`` (:func:`run_variant`).

    ``run_dir`` is set to where the file lies now rather than where the run wrote it, so a
    sweep that was moved or copied still tells its runs apart.
    """
    complete = runs.loc[runs["status"] == COMPLETE, "run_dir"]
    frames = [
        read_results(Path(run_dir) / "results.csv").assign(run_dir=run_dir, variant=run_variant(Path(run_dir)))
        for run_dir in complete
    ]
    if not frames:
        return pd.DataFrame(columns=[*RESULT_COLUMNS, "variant"])
    return pd.concat(frames, ignore_index=True)


def load_results(dirs: Dirs) -> pd.DataFrame:
    """The rows of every complete run's results.csv under ``dirs``; unfinished and failed runs are left out."""
    return read_runs(find_runs(dirs))
