"""results.csv rows -> the paper's table: mean and std over seeds of the mean over OOD test sets.

For a run r (one seed), a score s and a metric M measured on the OOD test sets O of its
data set, the run's value is the mean over the OOD sets, in percent,

    M(r, s) = 100 / |O| * sum_{o in O} M(r, s, o),

and a table cell holds the mean and the sample standard deviation (ddof = 1) of M(r, s)
over the runs R of one (dataset, method, variant, score) (variant: the run's overrides
besides the seed, see :mod:`mchad.report.runs`; the column is left out of the printed
tables when every run has the experiment as configured):

    mean = 1/|R| sum_r M(r, s),    std = sqrt( 1/(|R| - 1) sum_r (M(r, s) - mean)^2 ).

This is how the MCHAD paper (ICPR 2022, Table 2) reports its numbers: 6 seeds, OOD sets averaged.
``n_seeds`` counts runs, so two runs with the same seed count twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from mchad.errors import ConfigError
from mchad.evaluation.metrics import METRIC_NAMES

METRICS = ["Accuracy", *METRIC_NAMES]
KEY = ["dataset", "method", "variant", "score"]

# Rows follow the paper's table; names it does not know come after, alphabetically.
PAPER_ORDER = {
    "dataset": ("cifar10", "cifar100", "svhn"),
    "method": ("mchad", "gmchad", "cac", "gcac", "center", "gcenter", "ii", "softmax"),
}


def _paper_rank(column: pd.Series) -> pd.Series:
    order = PAPER_ORDER[column.name]
    return column.map(lambda name: f"{order.index(name) if name in order else len(order):03d}{name}")


def _in_paper_order(table: pd.DataFrame) -> pd.DataFrame:
    # A stable sort on dataset and method only keeps scores and OOD sets in the order the runs wrote them.
    return table.sort_values(list(PAPER_ORDER), key=_paper_rank, kind="stable", ignore_index=True)


def _mean_std(values: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = values.groupby(keys, sort=False, dropna=False)
    table = grouped[METRICS].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["n_seeds"] = grouped["run_dir"].nunique()
    return _in_paper_order(table.reset_index())


def _with_variant(results: pd.DataFrame) -> pd.DataFrame:
    """Rows read without :func:`mchad.report.runs.read_runs` (no variant column) count as the experiment as configured."""
    return results if "variant" in results else results.assign(variant="")


def per_run(results: pd.DataFrame) -> pd.DataFrame:
    """M(r, s) for every run and score: its metrics averaged over its OOD test sets, in percent."""
    grouped = _with_variant(results).groupby([*KEY, "seed", "run_dir"], sort=False, dropna=False)
    return _in_paper_order((grouped[METRICS].mean() * 100).reset_index())


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """The paper's table: one row per (dataset, method, score); ``<metric>_mean``, ``<metric>_std``, n_seeds."""
    return _mean_std(per_run(results), KEY)


def per_ood(results: pd.DataFrame) -> pd.DataFrame:
    """Like :func:`summarize` without averaging over OOD sets: one row per (dataset, method, variant, score, ood_dataset)."""
    percent = _with_variant(results).assign(**{metric: results[metric] * 100 for metric in METRICS})
    return _mean_std(percent, [*KEY, "ood_dataset"])


def _parse_headline(choices: Sequence[str]) -> dict[str | None, str]:
    """``["distance", "softmax=msp"]`` -> ``{None: "distance", "softmax": "msp"}`` (None: every method)."""
    headline: dict[str | None, str] = {}
    for choice in choices:
        method, _, score = choice.rpartition("=")
        if not score:
            raise ConfigError(f"--score {choice!r} names no score: write SCORE or METHOD=SCORE, e.g. softmax=msp")
        headline[method or None] = score
    return headline


def select_headline(results: pd.DataFrame, choices: Sequence[str]) -> pd.DataFrame:
    """Keep one headline score per method, as the paper's table does.

    ``choices`` holds ``SCORE`` (for every method that has it) and ``METHOD=SCORE`` (for one
    method, taking precedence). A method not named whose scores lack the ``SCORE`` keeps all
    of its scores. No choices: every score stays.
    """
    headline = _parse_headline(choices)
    if not headline:
        return results
    methods = set(results["method"])
    for method, score in headline.items():
        choice = f"{method}={score}" if method else score
        if method is not None and method not in methods:
            raise ConfigError(f"--score {choice}: no method {method!r} in the results: pick one of {sorted(methods)}")
        scores = set(results.loc[results["method"] == method, "score"] if method else results["score"])
        if score not in scores:
            raise ConfigError(f"--score {choice}: no such score in the results: pick one of {sorted(scores)}")
    kept = []
    for method, rows in results.groupby("method", sort=False):
        score = headline.get(method, headline.get(None))
        kept.append(rows[rows["score"] == score] if score in set(rows["score"]) else rows)
    return pd.concat(kept, ignore_index=True)


def _cells(table: pd.DataFrame, plus_minus: str) -> tuple[list[str], list[list[str]], int]:
    """Header and text rows of a summary table: key columns as they are, each metric as 'mean ± std'."""
    metrics = [column.removesuffix("_mean") for column in table.columns if column.endswith("_mean")]
    stats = {f"{metric}_{stat}" for metric in metrics for stat in ("mean", "std")}
    keys = [column for column in table.columns if column not in stats and column != "n_seeds"]
    if "variant" in keys and not table["variant"].astype(bool).any():
        keys.remove("variant")

    def cell(mean: float, std: float) -> str:
        # One seed has no spread; an empty std reads better than 'nan'.
        return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} {plus_minus} {std:.2f}"

    rows = [
        [str(row[key]) for key in keys]
        + [cell(row[f"{metric}_mean"], row[f"{metric}_std"]) for metric in metrics]
        + [str(row["n_seeds"])]
        for _, row in table.iterrows()
    ]
    return [*keys, *metrics, "n_seeds"], rows, len(keys)


def to_markdown(table: pd.DataFrame) -> str:
    """A :func:`summarize` or :func:`per_ood` table as a GitHub markdown table, cells 'mean ± std' in percent."""
    header, rows, n_keys = _cells(table, "±")
    align = ["---"] * n_keys + ["---:"] * (len(header) - n_keys)
    return "\n".join("| " + " | ".join(line) + " |" for line in [header, align, *rows]) + "\n"


def _latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text


def to_latex(table: pd.DataFrame) -> str:
    """A :func:`summarize` table as a booktabs tabular; a rule between data sets, repeated names left blank."""
    header, rows, n_keys = _cells(table, "$\\pm$")
    lines = [
        "% needs \\usepackage{booktabs}",
        "\\begin{tabular}{" + "l" * n_keys + "r" * (len(header) - n_keys) + "}",
        "\\toprule",
        " & ".join(_latex_escape(name) for name in header) + " \\\\",
        "\\midrule",
    ]
    previous: list[str] = []
    for row in rows:
        if previous and row[0] != previous[0]:
            lines.append("\\midrule")
        shown = [
            "" if previous[: i + 1] == row[: i + 1] else _latex_escape(value) for i, value in enumerate(row[:n_keys])
        ]
        lines.append(" & ".join(shown + row[n_keys:]) + " \\\\")
        previous = row
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
