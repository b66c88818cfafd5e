"""Box plots of the per-seed AUROC of each method, one figure per data set.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), never pyplot,
so the report works headless (Agg renders the PNG) and does not change a notebook's backend.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mchad.errors import ConfigError
from mchad.report.tables import per_run


def auroc_boxplot(results: pd.DataFrame, dataset: str, path: str | os.PathLike | None = None) -> Figure:
    """One box per (method, variant, score) of the AUROC of each run (mean over OOD sets, percent), runs as points.

    Saved as PNG to ``path`` when given; the figure is returned for a notebook to show.
    """
    runs = per_run(results)
    runs = runs[runs["dataset"] == dataset]
    if runs.empty:
        raise ConfigError(f"no complete run of dataset={dataset}: pick one of {sorted(set(results['dataset']))}")
    groups = runs.groupby(["method", "variant", "score"], sort=False)["AUROC"]
    labels = ["\n".join(filter(None, key)) for key in groups.groups]
    values = [group.to_numpy() for _, group in groups]

    figure = Figure(figsize=(max(4.5, 1.5 + 1.1 * len(values)), 4.0), layout="constrained")
    axes = figure.subplots()
    # Fliers off: every run is drawn as a point already.
    axes.boxplot(values, tick_labels=labels, showfliers=False, widths=0.5)
    for position, run_values in enumerate(values, start=1):
        # A fixed spread instead of random jitter, so the same runs give the same picture.
        offsets = np.linspace(-0.12, 0.12, len(run_values)) if len(run_values) > 1 else np.zeros(1)
        axes.scatter(position + offsets, run_values, s=14, color="tab:blue", alpha=0.8, zorder=3)
    axes.set_ylabel("AUROC (%)")
    axes.set_title(f"{dataset}: AUROC per run\n(mean over OOD sets)")
    axes.grid(axis="y", alpha=0.3)
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
