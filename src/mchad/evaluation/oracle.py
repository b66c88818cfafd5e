"""The OOD metrics computed the per-metric way with scikit-learn: an independent implementation
that the tests check :func:`mchad.evaluation.metrics.ood_metrics` against, and the benchmarks time it against."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve


def sklearn_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR-IN, AUPR-OUT and FPR95 (OOD = positive, higher score = more anomalous); each
    metric sorts the scores again."""
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
