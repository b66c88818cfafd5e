"""CAC and G-CAC: Class Anchor Clustering."""

from __future__ import annotations

import torch
from torch import Tensor

from mchad.methods.method import Method, Outputs, masked_mean, split_known
from mchad.methods.terms import (
    check_margin_form,
    check_non_negative,
    check_one_axis_per_class,
    cross_entropy_known,
    margin_term,
    min_distance,
    nearest_class,
    true_class_distance,
)
from mchad.nn.centers import pairwise_squared_distances


def anchor_term(distances: Tensor, y: Tensor) -> Tensor:
    """CAC anchor term ``L_A = 1/|K| sum_{i in K} d_{i y_i}`` over the known samples ``K``."""
    known, _ = split_known(y)
    return masked_mean(true_class_distance(distances, y), known)


def tuplet_term(distances: Tensor, y: Tensor) -> Tensor:
    """CAC tuplet term ``L_T = 1/|K| sum_{i in K} log(1 + sum_{j != y_i} exp(d_{i y_i} - d_ij))``.

    Since ``1 = exp(d_{iy} - d_{iy})``, the argument of the log is
    ``sum_j exp(d_{iy} - d_ij)``, so ``L_T`` is exactly the cross-entropy of the
    logits ``-d`` (a soft-min over distances); computing it that way needs no clamping.
    """
    return cross_entropy_known(-distances, y)


def cac_score(distances: Tensor) -> Tensor:
    """CAC rejection score ``min_j gamma_j`` with ``gamma = d * (1 - softmin(d))``; higher = more anomalous."""
    gamma = distances * (1 - torch.softmax(-distances, dim=1))
    return gamma.min(dim=1).values


class CAC(Method):
    """Class Anchor Clustering; G-CAC when ``weight_oe > 0``.

    Miller, Sünderhauf, Milford, Dayoub: *Class Anchor Clustering: a Loss for
    Distance-based Open Set Recognition*, WACV 2021 (https://arxiv.org/abs/2004.02434).

    Fixed anchors ``c_j = magnitude * e_j`` (a buffer, never trained) in a space with
    one dimension per class, so ``n_embedding`` must equal ``n_classes``;
    ``d_ij = ||f(x_i) - c_j||_2^2``. With ``K`` the known samples, ``O`` the outliers::

        anchor: w_anchor * 1/|K| sum_{i in K} d_{i y_i}
        tuplet: w_tuplet * 1/|K| sum_{i in K} log(1 + sum_{j != y_i} exp(d_{i y_i} - d_ij))
        margin: w_oe * sum_{i in O} sum_j max(0, m^2 - d_ij^2)     (G-CAC, as MCHAD's margin term)

    Prediction: the nearest anchor (the same as ``argmin gamma``, which is monotone in
    ``d``). Scores: ``distance`` = ``min_j d_ij``; ``cac`` = ``min_j gamma_ij`` with
    ``gamma_i = d_i * (1 - softmin(d_i))``, the paper's rejection score.

    Differences from pytorch-ood 0.4.0 ``CACLoss`` (which the reference code used):

    * its tuplet term takes classes ``0..C-2`` as the "other" classes for every sample:
      it includes the true class (a constant ``exp(0) = 1``) and never the last class.
      Here the sum runs over ``j != y`` as in the paper (the two differ on random
      inputs, e.g. 2.138 vs 2.374). The anchor term is the same.
    * its ``score`` returns ``-max_j gamma_j``; here ``cac`` is ``min_j gamma_j``.
    * it weights only the anchor term (``alpha``); here both terms have a weight.

    Like the reference, distances are squared; the CAC paper uses the Euclidean
    distance. The paper's magnitudes (1, 2, 10) were tuned with squared distances.

    Args:
        n_classes: number of known classes ``C``.
        n_embedding: must equal ``n_classes``.
        magnitude: length of every anchor.
        weight_anchor: ``w_anchor``.
        weight_tuplet: ``w_tuplet``.
        weight_oe: ``w_oe``; > 0 turns on the margin term on outliers (G-CAC).
        margin: ``m`` (see :func:`mchad.methods.terms.margin_term`).
        margin_form: ``"reference"`` or ``"paper"``, as for MCHAD.
    """

    score_names = ("distance", "cac")

    def __init__(
        self,
        n_classes: int,
        n_embedding: int,
        magnitude: float = 1.0,
        weight_anchor: float = 1.0,
        weight_tuplet: float = 1.0,
        weight_oe: float = 0.0,
        margin: float = 1.0,
        margin_form: str = "reference",
    ) -> None:
        super().__init__(n_classes, n_embedding)
        check_one_axis_per_class("CAC", n_classes, n_embedding, "one anchor axis per class")
        check_non_negative(
            magnitude=magnitude, weight_anchor=weight_anchor, weight_tuplet=weight_tuplet, weight_oe=weight_oe, margin=margin
        )
        check_margin_form(margin_form)
        self.register_buffer("anchors", float(magnitude) * torch.eye(self.n_classes))
        self.weight_anchor = float(weight_anchor)
        self.weight_tuplet = float(weight_tuplet)
        self.weight_oe = float(weight_oe)
        self.margin = float(margin)
        self.margin_form = margin_form

    def forward(self, z: Tensor) -> Outputs:
        return {"distances": pairwise_squared_distances(z, self.anchors)}

    def loss(self, out: Outputs, y: Tensor) -> dict[str, Tensor]:
        d = out["distances"]
        terms = {
            "anchor": self.weight_anchor * anchor_term(d, y),
            "tuplet": self.weight_tuplet * tuplet_term(d, y),
        }
        if self.uses_outliers:
            terms["margin"] = self.weight_oe * margin_term(d, y, self.margin, self.margin_form)
        return terms

    def predict(self, out: Outputs) -> Tensor:
        return nearest_class(out["distances"])

    def scores(self, out: Outputs) -> dict[str, Tensor]:
        d = out["distances"]
        return {"distance": min_distance(d), "cac": cac_score(d)}

    def class_centers(self) -> Tensor:
        return self.anchors
