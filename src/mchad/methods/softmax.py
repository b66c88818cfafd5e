"""Softmax baseline: a plain classifier, with the OOD scores that apply to any logits."""

from __future__ import annotations

import torch
from torch import Tensor

from mchad.methods.method import Method, Outputs
from mchad.methods.terms import check_non_negative, check_one_axis_per_class, cross_entropy_known

LOGIT_SCORES = ("msp", "maxlogit", "energy")


def msp_score(logits: Tensor) -> Tensor:
    """Maximum softmax probability, negated: ``-max_c softmax(logits)_c`` (Hendrycks & Gimpel, ICLR 2017)."""
    return -torch.softmax(logits, dim=1).max(dim=1).values


def maxlogit_score(logits: Tensor) -> Tensor:
    """Maximum logit, negated: ``-max_c logits_c`` (Hendrycks et al., ICML 2022)."""
    return -logits.max(dim=1).values


def energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Free energy ``E(x) = -T log sum_c exp(logits_c / T)`` (Liu et al., NeurIPS 2020); low on ID data."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


def logit_scores(logits: Tensor) -> dict[str, Tensor]:
    """Every score of :data:`LOGIT_SCORES` (higher = more anomalous); the energy score is ``E(x)`` at ``T = 1``."""
    return {"msp": msp_score(logits), "maxlogit": maxlogit_score(logits), "energy": energy(logits)}


class Softmax(Method):
    """Softmax classifier: the backbone's output is the logits.

    ``ce: w_ce * 1/|K| sum_{i in K} -log softmax(f(x_i))_{y_i}`` over the known samples ``K``
    (outliers, label -1, are ignored).

    Prediction: ``argmax_c f(x)_c``. Scores (higher = more anomalous): ``msp``
    ``-max_c softmax(f(x))_c``; ``maxlogit`` ``-max_c f(x)_c``; ``energy``
    ``-log sum_c exp(f(x)_c)``.

    Args:
        n_classes: number of known classes ``C``.
        n_embedding: must equal ``n_classes`` (the logits are the embedding).
        weight_ce: ``w_ce``.
    """

    score_names = LOGIT_SCORES
    linear_head = True
    embedding_kind = "the class logits"

    def __init__(self, n_classes: int, n_embedding: int, weight_ce: float = 1.0) -> None:
        super().__init__(n_classes, n_embedding)
        check_one_axis_per_class(type(self).__name__, n_classes, n_embedding, "the backbone outputs the logits")
        check_non_negative(weight_ce=weight_ce)
        self.weight_ce = float(weight_ce)

    def forward(self, z: Tensor) -> Outputs:
        # under mixed precision the backbone emits half floats, whose coarse steps near a
        # softmax of 1 would tie many scores
        return {"logits": z.float()}

    def loss(self, out: Outputs, y: Tensor) -> dict[str, Tensor]:
        return {"ce": self.weight_ce * cross_entropy_known(out["logits"], y)}

    def predict(self, out: Outputs) -> Tensor:
        return out["logits"].argmax(dim=1)

    def scores(self, out: Outputs) -> dict[str, Tensor]:
        return logit_scores(out["logits"])
