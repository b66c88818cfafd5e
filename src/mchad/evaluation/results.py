"""results.csv: one row per (OOD test set, score) of a finished run.

The file is written atomically (:func:`mchad.files.atomic_write`), so a run killed while writing leaves either the previous
results.csv or none, never half a file; :func:`results_complete` is what a
sweep checks to skip finished runs.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from mchad.evaluation.metrics import METRIC_NAMES
from mchad.files import atomic_write

RESULTS_FILE = "results.csv"
"""A run's results, in its run directory."""

RESULT_COLUMNS = (
    "experiment",
    "method",
    "dataset",
    "ood_dataset",
    "group",
    "score",
    "seed",
    "Accuracy",
    *METRIC_NAMES,
    "n_id",
    "n_ood",
    "epochs",
    "debug",
    "run_dir",
)
"""``debug``: the ``debug=`` option of a smoke-test run (``fdr``, ``limit``, ``overfit``), empty for a real one."""

LATER_COLUMNS = {"debug": ""}
"""Columns added after results.csv files were first written, with the value a file without them reads as."""

_TEXT_COLUMNS = ("experiment", "method", "dataset", "ood_dataset", "group", "score", "debug", "run_dir")
_PERCENT_COLUMNS = ("Accuracy", *METRIC_NAMES)


def write_results(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Write ``rows`` (dicts with exactly the keys of :data:`RESULT_COLUMNS`) to the CSV file ``path`` atomically.

    Raises:
        ValueError: naming the first row and column that is missing or not a result column.
    """
    for index, row in enumerate(rows):
        missing = [column for column in RESULT_COLUMNS if column not in row]
        if missing:
            raise ValueError(
                f"results row {index} lacks the column {missing[0]!r}: every row needs all of {RESULT_COLUMNS}"
            )
        unknown = [key for key in row if key not in RESULT_COLUMNS]
        if unknown:
            raise ValueError(
                f"results row {index} has the unknown column {unknown[0]!r}: add it to RESULT_COLUMNS or drop it"
            )

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, text.getvalue())


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results.csv; text columns stay strings (an empty group is ``""``, not NaN).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if a column of :data:`RESULT_COLUMNS` is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist: run the experiment first or fix the path")
    frame = pd.read_csv(path, dtype={column: str for column in _TEXT_COLUMNS}, float_precision="round_trip")
    missing = [column for column in RESULT_COLUMNS if column not in frame.columns and column not in LATER_COLUMNS]
    if missing:
        raise ValueError(
            f"{path} lacks the column {missing[0]!r}: it was not written by mchad.evaluation.write_results"
        )
    for column, value in LATER_COLUMNS.items():
        if column not in frame.columns:
            frame.insert(RESULT_COLUMNS.index(column), column, value)
    frame[list(_TEXT_COLUMNS)] = frame[list(_TEXT_COLUMNS)].fillna("")
    return frame


def results_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable results.csv with every column and at least one row."""
    try:
        return len(read_results(path)) > 0
    # pandas' parser errors and undecodable bytes are ValueErrors
    except (OSError, ValueError):
        return False


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of result rows (from :func:`mchad.evaluation.evaluator.evaluate` or results.csv).

    Metrics are shown in percent; below the rows, each (method, score)'s mean over
    the OOD sets (the number the paper's table reports).
    """
    label_columns = [c for c in ("method", "ood_dataset", "group", "score") if any(c in row for row in rows)]
    count_columns = [c for c in ("n_id", "n_ood") if any(c in row for row in rows)]
    # ASCII borders: the table also goes to log files and terminals without UTF-8
    table = Table(*label_columns, *_PERCENT_COLUMNS, *count_columns, box=box.ASCII)
    for column in table.columns[len(label_columns) :]:
        column.justify = "right"

    for row in rows:
        table.add_row(
            *(str(row.get(c, "")) for c in label_columns),
            *(_percent(row[c]) for c in _PERCENT_COLUMNS),
            *(str(row.get(c, "")) for c in count_columns),
        )
    table.add_section()

    rows_by_score: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        rows_by_score.setdefault((str(row.get("method", "")), str(row.get("score", ""))), []).append(row)
    for (method, score), score_rows in rows_by_score.items():
        labels = {"method": method, "ood_dataset": "mean", "score": score}
        table.add_row(
            *(labels.get(c, "") for c in label_columns),
            *(_percent(sum(r[c] for r in score_rows) / len(score_rows)) for c in _PERCENT_COLUMNS),
            *("" for _ in count_columns),
        )
    console = Console(file=io.StringIO(), width=240, color_system=None, force_terminal=False)
    console.print(table)
    return console.file.getvalue()


def _percent(fraction: float) -> str:
    return f"{100 * float(fraction):.2f}"
