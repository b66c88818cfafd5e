"""Aggregate the results.csv files of many runs into the paper's tables and plots.

Command line (see ``mchad-report --help``)::

    mchad-report logs/multiruns/2024-05-01 --out report/ [--latex] [--stats] [--score distance ...]

Library (the notebook uses these)::

    runs = find_runs(dirs)              # every run directory: run_dir, status (complete/incomplete/failed), detail
    results = load_results(dirs)        # rows of all complete runs' results.csv
    summary = summarize(results)        # mean/std over seeds of the per-seed mean over OOD sets, percent
    to_markdown(summary); to_latex(summary); per_ood(results); auroc_boxplot(results, "cifar10", "auroc.png")

Statistics (``--stats``; imported on its own, as it needs the stats extra; docs/statistics.md)::

    from mchad.report import stats
    summary = stats.add_confidence_intervals(summary, results)   # 95% bootstrap interval of every cell
    pairs = stats.paired_tests(results, summary)                 # Wilcoxon against the best, Holm-adjusted
    summary = stats.mark_best(summary, pairs); stats.draw_cd_diagram(results, "cd_diagram.png")
"""

from mchad.report.plots import auroc_boxplot
from mchad.report.runs import COMPLETE, FAILED, INCOMPLETE, find_runs, load_results, read_runs
from mchad.report.tables import METRICS, per_ood, per_run, select_headline, summarize, to_latex, to_markdown

__all__ = [
    "COMPLETE",
    "FAILED",
    "INCOMPLETE",
    "METRICS",
    "auroc_boxplot",
    "find_runs",
    "load_results",
    "per_ood",
    "per_run",
    "read_runs",
    "select_headline",
    "summarize",
    "to_latex",
    "to_markdown",
]
