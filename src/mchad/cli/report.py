"""``mchad-report DIR [DIR ...] --out OUT [--latex] [--stats] [--score SCORE|METHOD=SCORE ...]``.

Writes into OUT:

- ``summary.csv``, ``summary.md``: the paper's table, one row per (dataset, method, score), mean and
  std over runs of each run's mean over its OOD test sets, in percent (see mchad.report.tables);
  summary.md also lists the incomplete and failed runs, which are never averaged, and the smoke
  tests (``debug=...`` runs), averaged only with ``--include-debug``;
- ``per_ood/<dataset>.md``: the same for each OOD test set;
- ``auroc_<dataset>.png``: a box plot of the per-run AUROC of each (method, score);
- ``summary.tex`` with ``--latex``: the table as a booktabs tabular;
- ``embeddings/<run>.gif`` with ``--gif``: for every run trained with ``model.embedding_plots=true``
  (2-D embeddings), its per-epoch scatter frames as an animated GIF (the paper's animation).

With ``--stats`` (see :mod:`mchad.report.stats` and docs/statistics.md; needs the ``stats`` extra):

- every summary cell also holds its 95% bootstrap confidence interval over seeds, ``[low, high]``
  (summary.csv: ``<metric>_ci_low``, ``<metric>_ci_high``), and the AUROC cells are marked: bold
  for the best row of each data set, a dagger for the rows not significantly different from it
  (summary.csv: ``vs_best``);
- ``stats/<dataset>_pairs.csv``: each row against the best of its data set, paired over (seed, OOD
  set), Wilcoxon signed-rank p-value and its Holm adjustment;
- ``cd_diagram.png``: the critical-difference diagram of the rows' AUROC ranks over data sets
  (at least 5), else over (dataset, OOD set) blocks; skipped with one line saying why when there
  are fewer than 5 blocks;
- the box plots colour each run by its seed and draw each row's mean and interval;
- the intervals and tests are printed too.

Runs made by different code versions (git commit, ``+dirty``; ``unknown`` without provenance.json)
are reported apart, with a ``code_version`` column, and a ``warning:`` line names the versions and
how many runs each has; so does a line for each package (python, torch, Lightning, CUDA, cuDNN)
whose version differs between the runs. Runs of one code version give the tables without that column.

Without ``--score`` every score of every method is a row and none is singled out. ``--score distance``
keeps only the ``distance`` rows of the methods that have that score; ``--score softmax=msp`` picks the
score of one method. Both may be given together and repeated.

Bad input (a directory that does not exist, ``--out`` naming a file, a ``--score`` that is not in the
results) ends with one line ``error: <what was wrong>: <how to fix it>`` on stderr and exit status 2;
no complete run under the directories ends with an ``error:`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mchad.errors import ConfigError, fail

if TYPE_CHECKING:
    import pandas as pd

# pandas, matplotlib and torch (the report modules' imports) are imported once the arguments
# parsed: ``--help`` and a bad argument are answered without them

STD_NOTE = "std is the sample standard deviation (n - 1); n_seeds counts runs."
SUMMARY_NOTE = f"Mean ± std over runs (seeds) of each run's mean over its OOD test sets, in percent; {STD_NOTE}"
PER_OOD_NOTE = f"Mean ± std over runs (seeds) on each OOD test set, in percent; {STD_NOTE}"

PROG = "mchad-report"
EXAMPLES = f"""\
Writes summary.csv and summary.md (mean and std over seeds, in percent; incomplete and failed
runs are listed, never averaged), per_ood/<dataset>.md and auroc_<dataset>.png into OUT.
--stats adds bootstrap confidence intervals, paired Wilcoxon tests against the best method
(Holm-adjusted, stats/<dataset>_pairs.csv) and cd_diagram.png; see docs/statistics.md.
Exit status: 0 when the report is written, 1 when no run under DIR is complete, 2 for bad input.

examples:
  {PROG} logs/multiruns/default --out report/
  {PROG} logs/multiruns/paper --out report/ --latex
  {PROG} logs/multiruns/paper --out report/ --score distance --score softmax=msp
  {PROG} logs/multiruns/paper --out report/ --stats --latex
  {PROG} logs/multiruns/default --out report/ --gif    # runs trained with model.embedding_plots=true
"""


def _not_averaged(runs: pd.DataFrame) -> list[str]:
    """One line per incomplete, failed or smoke-test (debug) run: status, directory and why."""
    from mchad.report.runs import COMPLETE

    others = runs[runs["status"] != COMPLETE]
    return [f"{row.status}: {row.run_dir} ({row.detail})" for row in others.itertuples()]


def _summary_markdown(
    summary: pd.DataFrame, runs: pd.DataFrame, headline: Sequence[str], notes: tuple[str, str] = ("", "")
) -> str:
    """``notes``: what --stats adds above the table (the intervals) and under it (the marks)."""
    from mchad.report.tables import to_markdown

    scores = f"Headline scores: {', '.join(headline)}." if headline else "Every score of every method is a row."
    not_averaged = _not_averaged(runs)
    listing = "\n".join(f"- {line}" for line in not_averaged) if not_averaged else "None: every run is complete."
    above, under = (f" {notes[0]}" if notes[0] else "", f"\n{notes[1]}\n" if notes[1] else "")
    return (
        f"# Results summary\n\n{SUMMARY_NOTE} {scores}{above}\n\n{to_markdown(summary)}{under}\n"
        f"## Runs not averaged\n\n{listing}\n"
    )


def _per_ood_markdown(dataset: str, table: pd.DataFrame) -> str:
    from mchad.report.tables import to_markdown

    sections = [f"# {dataset}: by OOD test set\n\n{PER_OOD_NOTE}\n"]
    for ood_dataset, rows in table.groupby("ood_dataset", sort=False):
        sections.append(f"## {ood_dataset}\n\n{to_markdown(rows.drop(columns=['dataset', 'ood_dataset']))}")
    return "\n".join(sections)


def write_report(
    results: pd.DataFrame, runs: pd.DataFrame, out: Path, headline: Sequence[str], latex: bool, with_stats: bool = False
) -> list[Path]:
    """Write every report file for ``results`` (complete runs' rows) into ``out``; returns the paths written.

    ``with_stats``: the --stats additions (see the module docstring); their text is printed.
    """
    from mchad.report.plots import auroc_boxplot
    from mchad.report.tables import per_ood, summarize, to_latex

    summary = summarize(results)
    by_ood = per_ood(results)
    (out / "per_ood").mkdir(parents=True, exist_ok=True)
    written: dict[Path, str] = {}
    md_notes, tex_note = ("", ""), ""
    if with_stats:
        # Imported here: scikit-posthocs and statsmodels (the stats extra) are needed for --stats only.
        try:
            from mchad.report import stats
        except ImportError as error:
            raise ConfigError(
                f"--stats needs the package {error.name}, which is not installed: pip install 'mchad[stats]'"
            ) from None

        summary = stats.add_confidence_intervals(summary, results)
        pairs = stats.paired_tests(results, summary)
        summary = stats.mark_best(summary, pairs)
        md_notes, tex_note = (stats.CI_NOTE, stats.MARKDOWN_MARKS_NOTE), stats.LATEX_NOTE
        (out / "stats").mkdir(parents=True, exist_ok=True)
        for dataset, comparisons in pairs.groupby("dataset", sort=False):
            written[out / "stats" / f"{dataset}_pairs.csv"] = comparisons.to_csv(index=False, float_format="%.6g")
        print(stats.stats_text(summary, pairs))
    written |= {
        out / "summary.csv": summary.to_csv(index=False, float_format="%.2f"),
        out / "summary.md": _summary_markdown(summary, runs, headline, md_notes),
    }
    if latex:
        written[out / "summary.tex"] = to_latex(summary, tex_note)
    for dataset, table in by_ood.groupby("dataset", sort=False):
        written[out / "per_ood" / f"{dataset}.md"] = _per_ood_markdown(dataset, table)
    for path, text in written.items():
        path.write_text(text)
    plots = []
    for dataset in summary["dataset"].unique():
        plots.append(out / f"auroc_{dataset}.png")
        auroc_boxplot(results, dataset, plots[-1], summary if with_stats else None)
    if with_stats:
        drawn, line = stats.draw_cd_diagram(results, out / "cd_diagram.png")
        print(line)
        if drawn:
            plots.append(out / "cd_diagram.png")
    return [*written, *plots]


def write_gifs(runs: pd.DataFrame, out: Path) -> list[Path]:
    """An animated GIF of the embedding frames of every run that has them."""
    from mchad.visualize import FRAME_PATTERN, frames_to_gif

    gifs = []
    for run_dir in map(Path, runs["run_dir"]):
        if any((run_dir / "embeddings").glob(FRAME_PATTERN)):
            name = "-".join(run_dir.parts[-2:])
            (out / "embeddings").mkdir(parents=True, exist_ok=True)
            gifs.append(frames_to_gif(run_dir / "embeddings", out / "embeddings" / f"{name}.gif"))
    return gifs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Aggregate the results.csv files of many runs into mean/std tables and AUROC box plots.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, metavar="DIR", help="sweep or run directories, searched recursively"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="OUT", help="folder for the report files (created)")
    parser.add_argument("--latex", action="store_true", help="also write summary.tex (booktabs)")
    parser.add_argument("--gif", action="store_true", help="also animate the 2-D embedding frames of each run")
    parser.add_argument(
        "--stats",
        action="store_true",
        help="also bootstrap confidence intervals, paired Wilcoxon tests against the best method (Holm), "
        "a critical-difference diagram and per-seed points (needs the stats extra; docs/statistics.md)",
    )
    parser.add_argument(
        "--include-debug",
        action="store_true",
        help="also average the runs made with debug=fdr|limit|overfit (a few batches: left out by default)",
    )
    parser.add_argument(
        "--score",
        action="append",
        default=[],
        metavar="SCORE|METHOD=SCORE",
        help="headline score: keep only this score's rows (for every method having it, or for METHOD); "
        "repeatable; default: every score is a row",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mchad.report.runs import COMPLETE, DEBUG, FAILED, INCOMPLETE, find_runs, group_by_code_version, read_runs
    from mchad.report.tables import select_headline

    try:
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"--out {args.out} is a file: pass a folder for the report files, e.g. --out report/")
        runs = find_runs(args.dirs, include_debug=args.include_debug)
        counts = runs["status"].value_counts()
        statuses = (COMPLETE, INCOMPLETE, FAILED, *([DEBUG] if counts.get(DEBUG) else []))
        print(", ".join(f"{counts.get(status, 0)} {status}" for status in statuses) + " runs")
        for line in _not_averaged(runs):
            print(f"  not averaged, {line}")
        results = read_runs(runs)
        if results.empty:
            searched = ", ".join(map(str, args.dirs))
            print(f"error: no complete run under {searched}: nothing to summarise", file=sys.stderr)
            return 1
        results = select_headline(results, args.score)
        results, warnings = group_by_code_version(results)
        for line in warnings:
            print(line)
        written = write_report(results, runs, args.out, args.score, args.latex, args.stats)
        if args.gif:
            written += write_gifs(runs, args.out)
    except ConfigError as error:
        sys.stdout.flush()
        fail(str(error))
    print(f"wrote {len(written)} files to {args.out}/: " + ", ".join(str(p.relative_to(args.out)) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
