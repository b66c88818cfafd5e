"""Turn OOD scores on the test sets into one metrics row per (OOD set, score).

The evaluation layer knows score tensors, not methods: the training loop hands it, per test
set, each score of every image (computed once, in the one pass over the set) and, for the ID
set, the predicted and true classes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mchad.errors import ConfigError
from mchad.evaluation.metrics import accuracy, ood_metrics

Scores = dict[str, Tensor]
"""Score name -> one value per image; higher = more anomalous."""


@torch.no_grad()
def evaluate(
    scores: dict[str, Scores],
    id_name: str,
    id_predictions: Tensor,
    id_labels: Tensor,
    groups: dict[str, str],
) -> list[dict]:
    """Metrics of every OOD test set against the ID test set, for each score.

    Args:
        scores: test-set name -> its scores; holds the ID set under ``id_name`` and every OOD set.
        id_name: name of the ID test set in ``scores``.
        id_predictions: predicted class per ID test image, aligned with ``scores[id_name]``.
        id_labels: true class per ID test image.
        groups: OOD set name -> "near" / "far"; sets not named get "".

    Returns:
        One dict per (OOD set, score), OOD sets in the order of ``scores``, with the
        keys ood_dataset, group, score, Accuracy, AUROC, AUPR-IN, AUPR-OUT, FPR95,
        n_id, n_ood.
    """
    if id_name not in scores:
        raise ConfigError(
            f"ID test set {id_name!r} has no scores (got {sorted(scores)}): pass its scores under id_name"
        )
    id_scores = scores[id_name]
    id_accuracy = accuracy(id_predictions, id_labels)
    rows = []
    for ood_name, ood_scores in scores.items():
        if ood_name == id_name:
            continue
        for score_name, id_score in id_scores.items():
            rows.append(
                {
                    "ood_dataset": ood_name,
                    "group": groups.get(ood_name, ""),
                    "score": score_name,
                    "Accuracy": id_accuracy,
                    **ood_metrics(id_score, ood_scores[score_name]),
                    "n_id": id_score.numel(),
                    "n_ood": ood_scores[score_name].numel(),
                }
            )
    return rows
