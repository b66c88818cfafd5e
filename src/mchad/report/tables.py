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

When the runs were made by different code versions, ``results`` carries a ``code_version``
column (:func:`mchad.report.runs.group_by_code_version`) and it joins the key, so runs of
different versions are never averaged together.

With ``mchad-report --stats`` (:mod:`mchad.report.stats`) a summary also holds
``<metric>_ci_low`` and ``<metric>_ci_high`` (a 95% bootstrap interval, shown as ``[low, high]``
after 'mean ± std') and ``vs_best``, which marks the AUROC cells: bold for the best row of a
data set, a dagger for rows not significantly different from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from mchad.errors import ConfigError
from mchad.evaluation.metrics import METRIC_NAMES

METRICS = ["Accuracy", *METRIC_NAMES]
KEY = ["dataset", "method", "variant", "score"]
STAT_SUFFIXES = ("_mean", "_std", "_ci_low", "_ci_high")

VS_BEST = "vs_best"
BEST, NOT_DIFFERENT, DIFFERENT = "best", "n.s.", "different"
MARKED_METRIC = "AUROC"
MARKDOWN_MARKS = {BEST: "**{}**", NOT_DIFFERENT: "{}†"}
LATEX_MARKS = {BEST: "\\textbf{{{}}}", NOT_DIFFERENT: "{}$^\\dagger$"}

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


def row_keys(results: pd.DataFrame) -> list[str]:
    """The columns that make a table row: :data:`KEY`, and ``code_version`` when the runs were split by it."""
    return [*KEY, "code_version"] if "code_version" in results else KEY


def with_variant(results: pd.DataFrame) -> pd.DataFrame:
    """Rows read without :func:`mchad.report.runs.read_runs` (no variant column) are the experiment as configured."""
    return results if "variant" in results else results.assign(variant="")


def per_run(results: pd.DataFrame) -> pd.DataFrame:
    """M(r, s) for every run and score: its metrics averaged over its OOD test sets, in percent."""
    grouped = with_variant(results).groupby([*row_keys(results), "seed", "run_dir"], sort=False, dropna=False)
    return _in_paper_order((grouped[METRICS].mean() * 100).reset_index())


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """The paper's table: one row per (dataset, method, score); ``<metric>_mean``, ``<metric>_std``, n_seeds."""
    return _mean_std(per_run(results), row_keys(results))


def per_ood(results: pd.DataFrame) -> pd.DataFrame:
    """Like :func:`summarize` without averaging over OOD sets: a row per (dataset, method, variant, score, OOD set)."""
    percent = with_variant(results).assign(**{metric: results[metric] * 100 for metric in METRICS})
    return _mean_std(percent, [*row_keys(results), "ood_dataset"])


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


def _cells(table: pd.DataFrame, plus_minus: str, marks: Mapping[str, str]) -> tuple[list[str], list[list[str]], int]:
    """Header and text rows of a summary table: key columns as they are, each metric as 'mean ± std [low, high]'.

    ``marks`` maps a ``vs_best`` value to the format of the AUROC cell of such a row.
    """
    metrics = [column.removesuffix("_mean") for column in table.columns if column.endswith("_mean")]
    stats = {f"{metric}{suffix}" for metric in metrics for suffix in STAT_SUFFIXES}
    keys = [column for column in table.columns if column not in stats and column not in ("n_seeds", VS_BEST)]
    if "variant" in keys and not table["variant"].astype(bool).any():
        keys.remove("variant")

    def cell(row: pd.Series, metric: str) -> str:
        mean, std, low = row[f"{metric}_mean"], row[f"{metric}_std"], row.get(f"{metric}_ci_low", math.nan)
        # One seed has no spread and no interval; an empty std reads better than 'nan'.
        text = f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} {plus_minus} {std:.2f}"
        if not math.isnan(low):
            text += f" [{low:.2f}, {row[f'{metric}_ci_high']:.2f}]"
        return marks.get(row.get(VS_BEST, ""), "{}").format(text) if metric == MARKED_METRIC else text

    rows = [
        [str(row[key]) for key in keys] + [cell(row, metric) for metric in metrics] + [str(row["n_seeds"])]
        for _, row in table.iterrows()
    ]
    return [*keys, *metrics, "n_seeds"], rows, len(keys)


def to_markdown(table: pd.DataFrame) -> str:
    """A :func:`summarize` or :func:`per_ood` table as a GitHub markdown table, cells 'mean ± std' in percent."""
    header, rows, n_keys = _cells(table, "±", MARKDOWN_MARKS)
    align = ["---"] * n_keys + ["---:"] * (len(header) - n_keys)
    return "\n".join("| " + " | ".join(line) + " |" for line in [header, align, *rows]) + "\n"


def _latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text


def to_latex(table: pd.DataFrame, note: str = "") -> str:
    """A :func:`summarize` table as a booktabs tabular; a rule between data sets, repeated names left blank.

    ``note`` (LaTeX) is set in small type under the tabular.
    """
    header, rows, n_keys = _cells(table, "$\\pm$", LATEX_MARKS)
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
    if note:
        lines.append(f"\\par\\smallskip{{\\footnotesize {note}\\par}}")
    return "\n".join(lines) + "\n"
