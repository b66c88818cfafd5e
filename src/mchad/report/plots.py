"""Box plots of the per-seed AUROC of each method, one figure per data set.

With the confidence intervals of ``--stats`` (:mod:`mchad.report.stats`), each run's point is
coloured by its seed, so that the runs a paired test matches can be followed from box to box,
and each box gets its mean and 95% bootstrap interval as an error bar beside it.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), never pyplot,
so the report works headless (Agg renders the PNG) and does not change a notebook's backend.
Long row names (an ablation's variant, ``method.margin=8,model.optimizer.lr=0.003``) are wrapped
at :data:`LABEL_WIDTH` characters, preferably after ``,`` ``=`` ``_`` ``.`` or a space, and the
figure is widened until no two box labels overlap; the legend sits outside the axes, clear of
the data.
"""

from __future__ import annotations

import os
import re

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mchad.errors import ConfigError
from mchad.report.tables import per_run, row_keys

LABEL_WIDTH = 16
"""Characters per line of a box's label."""
LABEL_GAP = 8
"""Pixels (at the figure's dpi) kept free between the labels of neighbouring boxes."""


def wrap_label(text: str, width: int = LABEL_WIDTH) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken after ``,`` ``=`` ``_`` ``/``, a space or a ``.`` not
    followed by a digit where it can be, and inside a longer piece where it cannot."""
    lines = [""]
    # a "." before a digit belongs to its number: 0.05 stays whole
    for piece in re.findall(r"(?:[^,=_./ ]|\.(?=\d))*[,=_./ ]?", text):
        while len(piece) > width:
            lines[-1:] = [lines[-1], piece[:width]] if lines[-1] else [piece[:width]]
            piece = piece[width:]
            lines.append("")
        if len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return [line.rstrip() for line in lines if line.strip()]


def fit_labels(figure: Figure, axes, n_boxes: int) -> None:
    """Widen ``figure`` until the tick labels of its ``n_boxes`` boxes do not overlap (they are measured, drawn)."""
    for _ in range(4):
        figure.draw_without_rendering()
        widest = max(label.get_window_extent().width for label in axes.get_xticklabels())
        slot = axes.get_window_extent().width / n_boxes
        if widest + LABEL_GAP <= slot:
            return
        figure.set_figwidth(figure.get_figwidth() + n_boxes * (widest + LABEL_GAP - slot) / figure.dpi)


def auroc_boxplot(
    results: pd.DataFrame, dataset: str, path: str | os.PathLike | None = None, intervals: pd.DataFrame | None = None
) -> Figure:
    """One box per (method, variant, score) of the AUROC of each run (mean over OOD sets, percent), runs as points.

    ``intervals``: a summary with ``AUROC_ci_low``/``AUROC_ci_high``
    (:func:`mchad.report.stats.add_confidence_intervals`); with it the points are coloured by seed and
    each box has its mean and interval beside it. Saved as PNG to ``path`` when given; the figure is
    returned for a notebook to show.
    """
    runs = per_run(results)
    runs = runs[runs["dataset"] == dataset]
    if runs.empty:
        raise ConfigError(f"no complete run of dataset={dataset}: pick one of {sorted(set(results['dataset']))}")
    keys = row_keys(results)[1:]
    groups = runs.groupby(keys, sort=False)
    labels = ["\n".join(line for part in key if part for line in wrap_label(str(part))) for key in groups.groups]
    values = [group["AUROC"].to_numpy() for _, group in groups]

    label_lines = max(label.count("\n") + 1 for label in labels)
    figure = Figure(figsize=(max(4.5, 1.5 + 1.1 * len(values)), 3.6 + 0.15 * label_lines), layout="constrained")
    axes = figure.subplots()
    # Fliers off: every run is drawn as a point already.
    axes.boxplot(values, tick_labels=labels, showfliers=False, widths=0.5)
    seeds = sorted(runs["seed"].unique())
    palette = matplotlib.colormaps["tab10"]
    for position, (_, group) in enumerate(groups, start=1):
        # A fixed spread instead of random jitter, so the same runs give the same picture.
        offsets = np.linspace(-0.12, 0.12, len(group)) if len(group) > 1 else np.zeros(1)
        colors = "tab:blue" if intervals is None else [palette(seeds.index(seed) % 10) for seed in group["seed"]]
        axes.scatter(position + offsets, group["AUROC"], s=14, c=colors, alpha=0.8, zorder=3)
    if intervals is not None:
        cells = intervals[intervals["dataset"] == dataset].set_index(keys).loc[list(groups.groups)]
        errors = [cells["AUROC_mean"] - cells["AUROC_ci_low"], cells["AUROC_ci_high"] - cells["AUROC_mean"]]
        # Beside the box, clear of the points.
        positions = np.arange(1, len(cells) + 1) + 0.34
        mean = axes.errorbar(positions, cells["AUROC_mean"], yerr=errors, fmt="D", ms=4, color="black", capsize=3)
        handles = [Line2D([], [], ls="", marker="o", color=palette(i % 10)) for i in range(len(seeds))]
        # outside the axes: inside, it would hide points of whichever box lies under it
        legend_labels = [*(f"seed {seed}" for seed in seeds), "mean, 95% bootstrap CI"]
        figure.legend([*handles, mean], legend_labels, loc="outside right upper", fontsize=7)
    axes.set_ylabel("AUROC (%)")
    axes.set_title(f"{dataset}: AUROC per run\n(mean over OOD sets)")
    axes.grid(axis="y", alpha=0.3)
    fit_labels(figure, axes, len(values))
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
