"""Outlier Exposure: softmax classifier trained towards uniform predictions on outliers."""

from __future__ import annotations

import torch
from torch import Tensor

from mchad.methods.method import Outputs, masked_mean, split_known
from mchad.methods.softmax import Softmax
from mchad.methods.terms import check_non_negative


def uniform_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy from the uniform distribution to the softmax, averaged over the outliers ``O``:

    ``L_oe = 1/|O| sum_{i in O} ( log sum_c exp(logits_ic) - 1/C sum_c logits_ic )``.
    """
    _, outlier = split_known(y)
    return masked_mean(torch.logsumexp(logits, dim=1) - logits.mean(dim=1), outlier)


class OutlierExposure(Softmax):
    """Outlier Exposure with a softmax classifier.

    Hendrycks, Mazeika, Dietterich: *Deep Anomaly Detection with Outlier Exposure*, ICLR 2019
    (https://arxiv.org/abs/1812.04606, code: https://github.com/hendrycks/outlier-exposure).

    With ``K`` the known samples and ``O`` the outliers (label -1) of the batch::

        ce: w_ce * 1/|K| sum_{i in K} -log softmax(f(x_i))_{y_i}
        oe: w_oe * 1/|O| sum_{i in O} ( log sum_c exp(f(x_i)_c) - 1/C sum_c f(x_i)_c )

    Each term is a mean over its own samples, as in the authors' code. pytorch-ood
    0.4.0's ``OutlierExposureLoss`` divides both sums by the whole batch size
    ``|K| + |O|`` instead, i.e. it equals ``(|K| ce + |O| oe) / (|K| + |O|)``; the two
    agree on batches without outliers. Prediction and scores as :class:`Softmax`.

    Args:
        n_classes: number of known classes ``C``.
        n_embedding: must equal ``n_classes``.
        weight_ce: ``w_ce``.
        weight_oe: ``w_oe`` (0.5 in the paper); 0 reduces this to :class:`Softmax`.
    """

    def __init__(self, n_classes: int, n_embedding: int, weight_ce: float = 1.0, weight_oe: float = 0.5) -> None:
        super().__init__(n_classes, n_embedding, weight_ce)
        check_non_negative(weight_oe=weight_oe)
        self.weight_oe = float(weight_oe)

    def loss(self, out: Outputs, y: Tensor) -> dict[str, Tensor]:
        terms = super().loss(out, y)
        terms["oe"] = self.weight_oe * uniform_cross_entropy(out["logits"], y)
        return terms
