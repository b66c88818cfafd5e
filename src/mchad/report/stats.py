"""Statistics over seeds and OOD sets for ``mchad-report --stats``; how to read them: docs/statistics.md.

- Confidence interval of a table cell (one row of :func:`mchad.report.tables.summarize`, one
  metric): the 95% percentile bootstrap interval of the mean over runs of M(r, s), each run's
  mean over its OOD sets in percent; 10,000 resamples from ``numpy.random.default_rng(0)``,
  drawn afresh for each cell so that an interval does not depend on the other rows.
- Paired tests, per data set: the row of highest mean AUROC is the *best* (the first in the
  table's order on a tie); every other row is compared with it on the AUROC (percent) of each
  (seed, OOD set) the two share, averaged over runs that repeat a seed, by a two-sided Wilcoxon
  signed-rank test (``scipy.stats.wilcoxon``, exact for small samples without ties); the p-values
  of a data set are Holm-adjusted (``statsmodels``) over its comparisons. A row whose adjusted
  p-value is at least 0.05 is *not significantly different* from the best.
- Critical-difference diagram (Demšar 2006): the rows' mean ranks by AUROC over blocks (1 = best,
  ties share the mean rank), the Friedman test (``scipy.stats.friedmanchisquare``; for two rows the
  two-sided Wilcoxon signed-rank test over the blocks) and the Nemenyi critical distance
  (:func:`nemenyi_critical_distance`), drawn by scikit-posthocs' ``critical_difference_diagram``
  with a bar joining rows whose mean ranks are within that distance. The blocks are the data sets
  when at least 5 of them hold every row (Demšar's setting), else the (dataset, OOD set) pairs,
  each valued by the mean AUROC over runs; blocks that miss a row are left out, and with fewer
  than 5 blocks no diagram is drawn.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scikit_posthocs import critical_difference_diagram
from scipy import stats
from statsmodels.stats.multitest import multipletests

from mchad.report.tables import (
    BEST,
    DIFFERENT,
    MARKED_METRIC,
    METRICS,
    NOT_DIFFERENT,
    STAT_SUFFIXES,
    VS_BEST,
    per_ood,
    per_run,
    row_keys,
    summarize,
    with_variant,
)

ALPHA = 0.05
N_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
TESTED_METRIC = MARKED_METRIC  # the tables mark the outcome of these tests
MIN_BLOCKS = 5
"""Fewer blocks draw no CD diagram: the Friedman and Nemenyi tests are large-sample approximations, and with 4 blocks
the critical distance of 3 rows (1.66) is most of the rank scale (2)."""

_INTERVAL = (
    f"the {1 - ALPHA:.0%} percentile bootstrap confidence interval of the mean over runs ({N_RESAMPLES:,} resamples)"
)
_TEST = "two-sided Wilcoxon signed-rank test on the AUROC of each (seed, OOD set) pair, Holm-adjusted"
CI_NOTE = f"In brackets: {_INTERVAL}."
MARKDOWN_MARKS_NOTE = (
    f"Bold: the best mean AUROC of the data set; †: not significantly different from it ({_TEST} p >= {ALPHA}); "
    "the tests are in stats/<dataset>_pairs.csv."
)
LATEX_NOTE = (
    CI_NOTE.replace("%", "\\%") + " Bold: the best mean AUROC of the data set; $^\\dagger$: not significantly "
    f"different from it ({_TEST} $p \\geq {ALPHA}$)."
)


def bootstrap_ci(values: np.ndarray) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``values`` (see the module docstring); NaN for one value."""
    if len(values) < 2:
        return math.nan, math.nan
    interval = stats.bootstrap(
        (values,), np.mean, n_resamples=N_RESAMPLES, confidence_level=1 - ALPHA, method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    ).confidence_interval  # fmt: skip
    return float(interval.low), float(interval.high)


def label(row: pd.Series, keys: list[str]) -> str:
    """A row's name within its data set: its non-empty key values but the dataset, e.g. ``softmax msp``."""
    return " ".join(str(row[key]) for key in keys if key != "dataset" and row[key])


def add_confidence_intervals(summary: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """``summary`` (:func:`summarize` of ``results``) with ``<metric>_ci_low`` and ``<metric>_ci_high`` per metric."""
    keys = row_keys(results)
    intervals = []
    for key, runs in per_run(results).groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key, strict=True))
        for metric in METRICS:
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = bootstrap_ci(runs[metric].to_numpy())
        intervals.append(row)
    table = summary.merge(pd.DataFrame(intervals), on=keys, how="left")
    return table[[*keys, *(f"{metric}{suffix}" for metric in METRICS for suffix in STAT_SUFFIXES), "n_seeds"]]


def _wilcoxon(best: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    # scipy drops zero differences and answers identical samples with a NaN statistic and a warning;
    # identical AUROCs are no evidence of a difference, so p = 1.
    if np.array_equal(best, other):
        return 0.0, 1.0
    result = stats.wilcoxon(best, other)
    return float(result.statistic), float(result.pvalue)


def _best(table: pd.DataFrame) -> pd.Series:
    """The row of highest mean AUROC of one data set's rows; the first in the table's order on a tie."""
    return table.loc[table[f"{TESTED_METRIC}_mean"].idxmax()]


def paired_tests(results: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Every row of ``summary`` against the best of its data set (see the module docstring).

    One row per comparison: dataset, best (its :func:`label`), the compared row's key columns, n_pairs,
    mean_difference (best minus it, AUROC points), the Wilcoxon statistic, p_value, p_holm and significant.
    """
    keys = row_keys(results)
    pairs = with_variant(results).groupby([*keys, "seed", "ood_dataset"], dropna=False)[TESTED_METRIC].mean() * 100
    frames = []
    for dataset, table in summary.groupby("dataset", sort=False):
        by_pair = pairs.xs(dataset, level="dataset").unstack(keys[1:])
        best = _best(table)
        rows = []
        for _, row in table.drop(index=best.name).iterrows():
            both = by_pair[[tuple(best[keys[1:]]), tuple(row[keys[1:]])]].dropna().to_numpy()
            statistic, p_value = _wilcoxon(both[:, 0], both[:, 1]) if len(both) else (math.nan, math.nan)
            difference = float(np.mean(both[:, 0] - both[:, 1])) if len(both) else math.nan
            rows.append([*row[keys], len(both), difference, statistic, p_value])
        comparisons = pd.DataFrame(rows, columns=[*keys, "n_pairs", "mean_difference", "statistic", "p_value"])
        comparisons.insert(1, "best", label(best, keys))
        tested = comparisons["p_value"].notna()
        comparisons["p_holm"] = math.nan
        if tested.any():
            comparisons.loc[tested, "p_holm"] = multipletests(comparisons.loc[tested, "p_value"], method="holm")[1]
        comparisons["significant"] = comparisons["p_holm"] < ALPHA
        frames.append(comparisons)
    return pd.concat(frames, ignore_index=True)


def mark_best(summary: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``vs_best``: best, n.s. (not significantly different from the best), different, or ``""``
    for a row that shares no (seed, OOD set) with the best (``pairs``: :func:`paired_tests`)."""
    keys = row_keys(summary)
    tested = pairs.set_index(keys)["p_holm"]
    marks: dict[int, str] = {}
    for _, table in summary.groupby("dataset", sort=False):
        best = _best(table).name
        for index, row in table.iterrows():
            if index == best:
                marks[index] = BEST
                continue
            p_holm = tested.loc[tuple(row[keys])]
            marks[index] = "" if math.isnan(p_holm) else DIFFERENT if p_holm < ALPHA else NOT_DIFFERENT
    return summary.assign(**{VS_BEST: pd.Series(marks)})


def stats_text(summary: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """What ``--stats`` prints: per data set, each row's AUROC with its interval and its test against the best
    (``summary``: with intervals and marks, ``pairs``: :func:`paired_tests`)."""
    keys, metric = row_keys(summary), TESTED_METRIC
    sections = [
        f"AUROC (%): mean ± std over runs and {_INTERVAL};\neach row against the best of its data set: {_TEST} "
        "(pairs: how many; mean diff: best minus row, AUROC points)"
    ]
    tests = pairs.set_index(keys)
    for dataset, table in summary.groupby("dataset", sort=False):
        lines = []
        for _, row in table.iterrows():
            mean, std, low, high = (row[f"{metric}{suffix}"] for suffix in STAT_SUFFIXES)
            # One run has no spread and no interval: those cells stay empty rather than 'nan'.
            one_run = row["n_seeds"] < 2
            line = {
                "row": label(row, keys),
                "n_seeds": row["n_seeds"],
                metric: f"{mean:.2f}" if one_run else f"{mean:.2f} ± {std:.2f}",
                f"{1 - ALPHA:.0%} CI": "" if one_run else f"[{low:.2f}, {high:.2f}]",
                "vs_best": row[VS_BEST],
            }
            test = tests.loc[tuple(row[keys])] if row[VS_BEST] != BEST else None
            if test is not None and test["n_pairs"] == 0:
                line["pairs"] = "0"
            elif test is not None:
                line |= {
                    "pairs": str(test["n_pairs"]),
                    "mean diff": f"{test['mean_difference']:+.2f}",
                    "p": f"{test['p_value']:.2g}",
                    "p_holm": f"{test['p_holm']:.2g}",
                }
            lines.append(line)
        text = pd.DataFrame(lines).fillna("").to_string(index=False)
        sections.append(f"{dataset}:\n" + "\n".join(f"  {line}" for line in text.splitlines()))
    return "\n".join(sections)


def cd_blocks(results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The mean AUROC (%) of each row (a column, named by :func:`label`) in each block (see the module docstring),
    blocks that miss a row left out; and what the blocks are."""
    keys = row_keys(results)
    summary = summarize(results)
    by_dataset = summary.assign(row=summary.apply(label, axis=1, keys=keys))
    data = by_dataset.pivot(index="dataset", columns="row", values=f"{TESTED_METRIC}_mean").dropna()
    if len(data) >= MIN_BLOCKS:
        return data, "data sets"
    by_ood = per_ood(results)
    by_ood = by_ood.assign(row=by_ood.apply(label, axis=1, keys=keys))
    data = by_ood.pivot(index=["dataset", "ood_dataset"], columns="row", values=f"{TESTED_METRIC}_mean").dropna()
    return data, "(dataset, OOD set) blocks"


def nemenyi_critical_distance(k: int, n_blocks: int, alpha: float = ALPHA) -> float:
    """How far apart the mean ranks of two of ``k`` rows over ``n_blocks`` blocks must be to differ at level ``alpha``
    (Demšar 2006, eq. 5): q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha the upper alpha quantile of the studentized range
    of k means with infinite degrees of freedom, divided by sqrt(2)."""
    q_alpha = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q_alpha * math.sqrt(k * (k + 1) / (6 * n_blocks)))


def mean_ranks(data: pd.DataFrame) -> pd.Series:
    """Each row's (a column of ``data``) mean rank over the blocks (the index), 1 = highest AUROC, ties sharing the
    mean rank; best first."""
    return data.rank(axis=1, ascending=False, method="average").mean().sort_values(kind="stable")


def omnibus_test(data: pd.DataFrame) -> tuple[str, float]:
    """Whether the rows' ranks differ at all: the Friedman test; for two rows (where Friedman is a sign test) the
    two-sided Wilcoxon signed-rank test over the blocks. Returns its name and p-value."""
    columns = data.T.to_numpy()
    if len(columns) == 2:
        return "Wilcoxon", _wilcoxon(*columns)[1]
    return "Friedman", float(stats.friedmanchisquare(*columns).pvalue)


def cd_figure(data: pd.DataFrame, blocks: str) -> tuple[Figure, str]:
    """The critical-difference diagram of ``data`` (:func:`cd_blocks`, at least two rows) and the line that says what it
    shows."""
    ranks, critical = mean_ranks(data), nemenyi_critical_distance(data.shape[1], len(data))
    test, p_value = omnibus_test(data)
    # the bars join the rows whose mean ranks are within the critical distance: "p" 1 for those pairs, 0 for the rest
    apart = np.abs(ranks.to_numpy()[:, None] - ranks.to_numpy()[None, :]) > critical
    # the row names stand left and right of the rank scale: long ones (an ablation's variants) widen the figure
    longest = max(len(str(name)) for name in ranks.index)
    figure = Figure(figsize=(max(8.0, 4.0 + 0.08 * longest), 1.6 + 0.3 * data.shape[1]), layout="constrained")
    figure.suptitle(
        f"AUROC mean rank over {len(data)} {blocks} (1 = best)\n{test} p = {p_value:.2g}; "
        f"bars join rows within the Nemenyi CD = {critical:.2f}",
        fontsize=9,
    )
    axes = figure.add_subplot()
    critical_difference_diagram(
        ranks, pd.DataFrame(np.where(apart, 0.0, 1.0), index=ranks.index, columns=ranks.index), cd=critical,
        alpha=ALPHA, ax=axes, label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
        label_props={"fontsize": 8},
    )  # fmt: skip
    # the whole rank scale, 1 .. k, so that the ranks are seen against it (with a margin: no marker cut in half)
    k = data.shape[1]
    axes.set_xlim(0.9, max(k, ranks.iloc[0] + critical) + 0.1)
    axes.set_xticks(range(1, k + 1))
    line = (
        f"CD diagram: mean AUROC ranks of {data.shape[1]} rows over {len(data)} {blocks}, "
        f"{test} p = {p_value:.2g}, Nemenyi CD = {critical:.2f}"
    )
    return figure, line


def draw_cd_diagram(results: pd.DataFrame, path: str | os.PathLike) -> tuple[bool, str]:
    """Draw the critical-difference diagram of ``results`` to ``path`` (PNG); returns whether it was drawn and the
    line that says what was drawn, or why nothing was."""
    data, blocks = cd_blocks(results)
    if data.shape[1] < 2:
        return False, "CD diagram skipped: a single method and score, nothing to rank"
    if len(data) < MIN_BLOCKS:
        return False, (
            f"CD diagram skipped: it needs at least {MIN_BLOCKS} blocks holding every method, these runs give "
            f"{len(data)} {blocks}; add OOD sets or data sets"
        )
    figure, line = cd_figure(data, blocks)
    figure.savefig(path, dpi=120)
    return True, line
