"""Turn a method's outputs on the test sets into one metrics row per (OOD set, score).

Every image passed through the network once; here the method's OOD scores are
computed once per test set (the ID set's scores are reused against every OOD
set) and combined into the metrics of :mod:`mchad.evaluation.metrics`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mchad.errors import ConfigError
from mchad.evaluation.metrics import accuracy, ood_metrics
from mchad.methods.method import Method, Outputs


@torch.no_grad()
def evaluate(
    method: Method,
    outputs: dict[str, Outputs],
    id_labels: Tensor,
    id_name: str,
    groups: dict[str, str],
) -> list[dict]:
    """Metrics of every OOD test set against the ID test set, for each of the method's scores.

    Args:
        method: the trained method; only its ``predict`` and ``scores`` are called.
        outputs: test-set name -> the method's forward outputs, concatenated over
            batches; holds the ID set under ``id_name`` and every OOD set.
        id_labels: class labels of the ID test set, aligned with ``outputs[id_name]``.
        id_name: name of the ID test set in ``outputs``.
        groups: OOD set name -> "near" / "far"; sets not named get "".

    Returns:
        One dict per (OOD set, score), OOD sets in the order of ``outputs``, with the
        keys ood_dataset, group, score, Accuracy, AUROC, AUPR-IN, AUPR-OUT, FPR95,
        n_id, n_ood.
    """
    if id_name not in outputs:
        raise ConfigError(f"ID test set {id_name!r} has no outputs (got {sorted(outputs)}): pass its outputs under id_name")
    id_outputs = outputs[id_name]
    id_scores = method.scores(id_outputs)
    id_accuracy = accuracy(method.predict(id_outputs), id_labels)

    rows = []
    for ood_name, ood_outputs in outputs.items():
        if ood_name == id_name:
            continue
        ood_scores = method.scores(ood_outputs)
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
