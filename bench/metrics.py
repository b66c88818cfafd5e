"""(d) OOD metrics on 10^6 scores: ours (:func:`mchad.evaluation.metrics.ood_metrics`) against pytorch-ood's OODMetrics.

Scores: half ID ~ N(0, 1), half OOD ~ N(1, 1), float32, on the benchmark device.
Every round checks that the values agree, and so does a copy of the scores rounded
to two decimals (heavy ties). For scale, ``details`` also times scikit-learn's
one-call-per-metric way (roc_auc_score, two precision_recall_curve, roc_curve), which
sorts the scores once per metric.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_ood.metrics import OODMetrics
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

from bench.options import Options
from bench.report import Result
from bench.timing import alternate, median, stopwatch
from bench.workload import DataPaths
from mchad.evaluation.metrics import METRIC_NAMES, ood_metrics

NAME = "metrics"
TITLE = "(d) OOD metrics on 10^6 scores: ours (ood_metrics) vs pytorch-ood OODMetrics"
TARGET = 5.0
ROUNDS = 5
REFERENCE_KEYS = {"AUROC": "AUROC", "AUPR-IN": "AUPR-IN", "AUPR-OUT": "AUPR-OUT", "FPR95": "FPR95TPR"}


def pytorch_ood_metrics(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> dict[str, float]:
    labels = torch.cat([torch.zeros_like(id_scores, dtype=torch.long), torch.full_like(ood_scores, -1, dtype=torch.long)])
    values = OODMetrics().update(torch.cat([id_scores, ood_scores]), labels).compute()
    return {ours: values[theirs] for ours, theirs in REFERENCE_KEYS.items()}


def sklearn_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """The per-metric way: each call sorts the scores again."""
    scores = np.concatenate([id_scores, ood_scores])
    is_ood = np.concatenate([np.zeros(len(id_scores)), np.ones(len(ood_scores))])
    fpr, tpr, _ = roc_curve(is_ood, scores, drop_intermediate=False)
    precision_out, recall_out, _ = precision_recall_curve(is_ood, scores)
    precision_in, recall_in, _ = precision_recall_curve(1 - is_ood, -scores)
    return {
        "AUROC": roc_auc_score(is_ood, scores),
        "AUPR-IN": auc(recall_in, precision_in),
        "AUPR-OUT": auc(recall_out, precision_out),
        "FPR95": float(fpr[np.argmax(tpr >= 0.95)]),
    }


def largest_difference(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[name] - b[name]) for name in METRIC_NAMES)


def run(options: Options, paths: DataPaths) -> Result:
    device = options.torch_device
    generator = torch.Generator().manual_seed(0)
    half = options.metric_scores // 2
    id_scores = torch.randn(half, generator=generator).to(device)
    ood_scores = (torch.randn(options.metric_scores - half, generator=generator) + 1).to(device)
    values: dict[str, dict[str, float]] = {}

    def timed(name: str, compute) -> float:
        with stopwatch(device) as elapsed:
            values[name] = compute(id_scores, ood_scores)
        return elapsed()

    rounds = alternate(
        ROUNDS,
        ours=lambda: timed("ours", ood_metrics),
        reference=lambda: timed("reference", pytorch_ood_metrics),
        higher_is_better=False,
    )
    tied_id, tied_ood = id_scores.round(decimals=2), ood_scores.round(decimals=2)
    sklearn_seconds = timed("sklearn", lambda a, b: sklearn_metrics(a.cpu().numpy(), b.cpu().numpy()))
    return Result(
        name=NAME,
        title=TITLE,
        unit="seconds",
        higher_is_better=False,
        rounds=rounds,
        target=TARGET,
        checks={
            "max |ours - pytorch-ood|": largest_difference(values["ours"], values["reference"]),
            "max |ours - pytorch-ood| with ties": largest_difference(
                ood_metrics(tied_id, tied_ood), pytorch_ood_metrics(tied_id, tied_ood)
            ),
            "max |ours - scikit-learn|": largest_difference(values["ours"], values["sklearn"]),
        },
        details={
            "values_ours": values["ours"],
            "values_pytorch_ood": values["reference"],
            "sklearn_seconds": sklearn_seconds,
            "ratio_vs_sklearn": sklearn_seconds / median(r["ours"] for r in rounds),
        },
        config={"n_scores": options.metric_scores, "n_id": half, "n_ood": options.metric_scores - half, "dtype": "float32"},
    )
