"""Find the run directories of one or many sweeps and read the results of the finished ones.

A directory is a *run* when it holds any of the files a run leaves behind:
``.hydra/config.yaml`` (it started), ``checkpoints/`` (it trained), ``error.txt`` (it
crashed) or ``results.csv`` (it evaluated). Its status is

- ``complete``: ``results.csv`` exists and parses with every column of the results schema;
- ``debug``: complete, but made by a smoke test (``debug=fdr|limit|overfit``, results.csv's ``debug``
  column): a few batches, not a result; ``complete`` when asked for (``include_debug``);
- ``failed``: not complete, and ``error.txt`` exists;
- ``incomplete``: anything else (still running, killed, or a truncated ``results.csv``).

Only complete runs are ever averaged; the others are listed so that a missing seed is seen.

A run's *variant* is what its command line changed besides the seed: Hydra's
``override_dirname`` of the job (the overrides minus the keys excluded from directory
names in ``config/hydra/default.yaml``: experiment, tag, paths, data roots, launcher,
...) without ``seed=...``, e.g. ``method.margin=8`` for one point of an ablation grid
and ``""`` for the experiment as configured. Seeds of one variant are averaged together.

A run's *code version* comes from its ``provenance.json`` (written by :mod:`mchad.rundir`):
the git commit, 7 characters, with ``+dirty`` when the tree had uncommitted changes, or
``mchad <version>`` for an installed package outside git, or ``unknown`` for a run without
the file. Runs of different code versions are reported apart
(:func:`group_by_code_version`); runs of different package versions (python, torch,
Lightning, CUDA, cuDNN) are only warned about.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from mchad.errors import ConfigError, command
from mchad.evaluation.results import RESULT_COLUMNS, read_results, results_complete
from mchad.rundir import PROVENANCE_FILE

COMPLETE, DEBUG, INCOMPLETE, FAILED = "complete", "debug", "incomplete", "failed"
RUN_COLUMNS = ["run_dir", "status", "detail"]
UNKNOWN = "unknown"
PACKAGE_KEYS = ("python", "torch", "pytorch_lightning", "cuda", "cudnn")

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


def run_status(run_dir: Path, include_debug: bool = False) -> tuple[str, str]:
    """(status, detail) of one run directory; detail says why a run is not complete.

    ``include_debug``: a smoke-test run (``debug=...``) with results counts as complete.
    """
    results = run_dir / "results.csv"
    if results_complete(results):
        debug = next((d for d in read_results(results)["debug"] if d), "")
        if debug and not include_debug:
            return DEBUG, f"debug={debug}, a smoke test: {command('report')} --include-debug averages it too"
        return COMPLETE, ""
    if (run_dir / "error.txt").is_file():
        return FAILED, _last_line(run_dir / "error.txt")
    if results.is_file():
        return INCOMPLETE, "results.csv does not parse or lacks columns"
    if (run_dir / "checkpoints").is_dir():
        return INCOMPLETE, "checkpoints but no results.csv"
    return INCOMPLETE, "no results.csv"


def find_runs(dirs: Dirs, include_debug: bool = False) -> pd.DataFrame:
    """Every run directory under ``dirs`` (searched recursively), one row each: run_dir, status, detail.

    ``include_debug``: smoke-test runs (``debug=...``) with results are ``complete``, not ``debug``.
    """
    found = {path.resolve() for root in _as_dirs(dirs) for path in _run_dirs(root)}
    rows = [(str(path), *run_status(path, include_debug)) for path in sorted(found)]
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


def load_results(dirs: Dirs, include_debug: bool = False) -> pd.DataFrame:
    """The rows of every complete run's results.csv under ``dirs``; unfinished and failed runs are left out,
    and smoke-test runs (``debug=...``) unless ``include_debug``."""
    return read_runs(find_runs(dirs, include_debug))


def read_provenance(run_dir: Path) -> dict[str, Any]:
    """The run's ``provenance.json``; ``{}`` when it has none or the file does not parse (both count as unknown)."""
    try:
        record = json.loads((run_dir / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def code_version_label(record: dict[str, Any]) -> str:
    """``23cae10``, ``23cae10+dirty``, ``mchad 0.1.0`` or ``unknown`` (see the module docstring)."""
    if record.get("git_commit"):
        return str(record["git_commit"])[:7] + ("+dirty" if record.get("git_dirty") else "")
    if record.get("package_version"):
        return f"mchad {record['package_version']}"
    return UNKNOWN


def provenance_table(run_dirs: Iterable[PathLike]) -> pd.DataFrame:
    """One row per run directory: run_dir, code_version and the :data:`PACKAGE_KEYS` of its provenance.json."""
    rows = []
    for run_dir in run_dirs:
        record = read_provenance(Path(run_dir))
        # A key the run wrote as null (cuDNN off the GPU) is a value of its own, unlike a run without the file.
        packages = {key: str(record[key]) if key in record else UNKNOWN for key in PACKAGE_KEYS}
        rows.append({"run_dir": str(run_dir), "code_version": code_version_label(record), **packages})
    return pd.DataFrame(rows, columns=["run_dir", "code_version", *PACKAGE_KEYS])


def _counted(values: pd.Series) -> str:
    counts = values.value_counts()
    return ", ".join(f"{value} ({count} run{'' if count == 1 else 's'})" for value, count in counts.items())


def group_by_code_version(results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``results`` (:func:`read_runs` rows) and one warning line per provenance value its runs differ in.

    When the code versions differ, each row gets its run's ``code_version``, which the tables
    (:mod:`mchad.report.tables`) then add to their key: averaging seeds of different code would
    hide a change in the numbers behind the spread over seeds. Otherwise ``results`` is returned as it is.
    """
    runs = provenance_table(results["run_dir"].unique())
    # A run without provenance is named once, by its code version; a package is only warned about when the runs
    # that recorded it differ.
    packages = [column for column in PACKAGE_KEYS if runs.loc[runs[column] != UNKNOWN, column].nunique() > 1]
    warnings = [f"warning: the runs differ in {column}: {_counted(runs[column])}" for column in packages]
    if runs["code_version"].nunique() == 1:
        return results, warnings
    code = f"warning: the runs differ in code_version: {_counted(runs['code_version'])}; their rows are reported apart"
    versions = runs.set_index("run_dir")["code_version"]
    return results.assign(code_version=results["run_dir"].map(versions)), [code, *warnings]
