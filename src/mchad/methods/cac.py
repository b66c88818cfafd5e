"""CAC and G-CAC: Class Anchor Clustering."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mchad.errors import ConfigError
from mchad.methods.method import Method, Outputs, masked_mean, split_known
from mchad.methods.terms import (
    MarginForm,
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


SCORE_FORMS = ("paper", "reference")


def one_minus_softmin(d: Tensor) -> Tensor:
    """``1 - softmin(d)_j = sum_{k != j} exp(-d_k) / sum_k exp(-d_k)`` per row, without cancellation.

    For the nearest class ``1 - softmin`` is ``1 - (1 - eps)``: computed that way, float32
    keeps it only to ~1e-7 absolute (errors of several percent in the score at anchor
    magnitude 10, where ``eps`` is ~1e-6). Here, with
    ``w_j = exp(d_min - d_j)`` (1 at the nearest class, never overflowing), that entry is
    ``sum_{k != nearest} w_k / sum_k w_k``; the others are ``1 - w_j / sum_k w_k`` with
    ``w_j / sum_k w_k <= 1/2``, which loses nothing.
    """
    nearest = d.argmin(dim=1, keepdim=True)
    w = torch.exp(d.gather(1, nearest) - d)
    total = w.sum(dim=1, keepdim=True)
    others = w.scatter(1, nearest, 0.0).sum(dim=1, keepdim=True)
    return (1 - w / total).scatter(1, nearest, others / total)


def rejection_score(d: Tensor) -> Tensor:
    """The CAC paper's rejection score on Euclidean distances ``d`` (B x C), higher = more anomalous:

    ``min_j gamma_j`` with ``gamma_j = d_j * (1 - softmin(d)_j)`` (Miller et al., WACV 2021).
    """
    return (d * one_minus_softmin(d)).min(dim=1).values


def cac_score(distances: Tensor, form: str = "paper") -> Tensor:
    """CAC score from the SQUARED distances ``d2 = ||f(x) - c||_2^2`` that :class:`CAC` computes.

    * ``form="paper"``: :func:`rejection_score` of the Euclidean distances ``sqrt(d2)``, as in
      the CAC paper and its authors' code. Far from every anchor it grows with the distance.
    * ``form="reference"``: ``min_j d2_j (1 - softmin(d2)_j)``, the formula applied to the
      squared distances, as the MCHAD reference code did; it tends to 0 far from every anchor.
    """
    if form == "reference":
        gamma = distances * (1 - torch.softmax(-distances, dim=1))
        return gamma.min(dim=1).values
    return rejection_score(distances.clamp(min=0).sqrt())


def check_score_form(score_form: str) -> None:
    """Raise :class:`ConfigError` unless ``score_form`` is one of :data:`SCORE_FORMS`."""
    if score_form not in SCORE_FORMS:
        raise ConfigError(
            f"method.score_form={score_form} is unknown: set method.score_form to one of {', '.join(SCORE_FORMS)}"
        )


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
    ``d``). Scores (higher = more anomalous): ``distance`` = ``min_j d_ij``, the squared
    distance to the nearest anchor (it ranks like the Euclidean one); ``cac``, the paper's
    rejection score.

    The ``cac`` score. The CAC paper computes it on the Euclidean distances
    ``e_ij = ||f(x_i) - c_j||_2``: ``gamma_i = e_i * (1 - softmin(e_i))`` and an input is
    rejected by ``min_j gamma_ij`` (the authors' code, https://github.com/dimitymiller/cac-openset,
    ``torch.norm`` distances in ``distance_classifier``, the score in ``gather_outputs`` and
    the min in ``metrics.auroc``). ``score_form`` chooses how it is computed here:

    * ``"paper"`` (default): ``min_j gamma_ij`` on ``e = sqrt(d)``. For ``f(x) = s u``
      (``|u| = 1``) and ``s -> inf``, ``e_j = s - m u_j + O(1/s)``: the gaps between the
      ``e_j`` stay bounded, softmin(e) tends to ``softmax(m u)``, which is not one-hot, so
      ``min_j gamma_j`` grows like ``s``: far inputs get high scores.
    * ``"reference"``: the same formula on the squared distances ``d``, as the MCHAD reference
      code computed it (``rejection_score(dists).min(dim=1)`` on squared ``pairwise_distances``,
      https://github.com/kkirchheim/mchad, ``src/callbacks/cac.py``). There the gaps
      ``d_j - d_k = 2 s m (u_k - u_j)`` grow with ``s``, softmin(d) becomes one-hot on the
      nearest anchor ``k`` and ``gamma_k ~ s^2 sum_{j != k} exp(-2 s m (u_k - u_j))`` tends
      to 0 (mostly exactly 0 in float32 at 10x the anchor length): inputs far from every
      anchor score like the ID data near an anchor, and further out lower. On the synthetic
      data of ``tests/test_far_ood_scores.py`` (C=4, ``magnitude=2``, ID within ~0.3 of an
      anchor, OOD at ``scale`` x the anchor length in random directions) the AUROC of
      ``"reference"`` is 0.95 at scale 1, 0.63 at 3, 0.23 at 10 and 0.04 at 100; ``"paper"``
      and ``distance`` give 0.97 at scale 1 and 1.0 from 3 on. At ``magnitude=10`` the squared
      gaps near an anchor (~200) make ``1 - softmin`` underflow for the ID data as well: the
      ``"reference"`` score is 0 almost everywhere and its AUROC ~0.5 at every scale.

    Both forms are kept for comparison with published numbers; the loss is the same for both.
    The paper's code also moves the anchors to the class means of the correctly classified
    training logits before testing; here the anchors stay fixed.

    Differences from pytorch-ood 0.4.0 ``CACLoss``:

    * its tuplet term takes classes ``0..C-2`` as the "other" classes for every sample:
      it includes the true class (a constant ``exp(0) = 1``) and never the last class.
      Here the sum runs over ``j != y`` as in the paper (the two differ on random
      inputs, e.g. 2.138 vs 2.374). The anchor term is the same.
    * its ``score`` returns ``-max_j gamma_j`` (on the squared distances it is given): the max,
      not the min, and negated, so it ranks ID above far OOD (AUROC 0.14 at scale 1 and 0.0
      from 3 on, on the data above); neither form here is that.
    * it weights only the anchor term (``alpha``); here both terms have a weight.

    Distances are squared in the loss terms, like the reference; the CAC paper and its code
    use the Euclidean distance there too. The paper's magnitudes (1, 2, 10) were tuned with
    squared distances.

    Args:
        n_classes: number of known classes ``C``.
        n_embedding: must equal ``n_classes``.
        magnitude: length of every anchor.
        weight_anchor: ``w_anchor``.
        weight_tuplet: ``w_tuplet``.
        weight_oe: ``w_oe``; > 0 turns on the margin term on outliers (G-CAC).
        margin: ``m`` (see :func:`mchad.methods.terms.margin_term`).
        margin_form: ``"reference"`` or ``"paper"``, as for MCHAD.
        score_form: ``"paper"`` (default) or ``"reference"``: the ``cac`` score on Euclidean
            or on squared distances (see above).
    """

    score_names = ("distance", "cac")
    embedding_kind = "a logit space with fixed class anchors, scored by distances"

    def __init__(
        self,
        n_classes: int,
        n_embedding: int,
        magnitude: float = 1.0,
        weight_anchor: float = 1.0,
        weight_tuplet: float = 1.0,
        weight_oe: float = 0.0,
        margin: float = 1.0,
        margin_form: MarginForm = "reference",
        score_form: Literal["paper", "reference"] = "paper",
    ) -> None:
        super().__init__(n_classes, n_embedding)
        check_one_axis_per_class("CAC", n_classes, n_embedding, "one anchor axis per class")
        check_non_negative(
            magnitude=magnitude,
            weight_anchor=weight_anchor,
            weight_tuplet=weight_tuplet,
            weight_oe=weight_oe,
            margin=margin,
        )
        check_margin_form(margin_form)
        check_score_form(score_form)
        self.register_buffer("anchors", float(magnitude) * torch.eye(self.n_classes))
        self.weight_anchor = float(weight_anchor)
        self.weight_tuplet = float(weight_tuplet)
        self.weight_oe = float(weight_oe)
        self.margin = float(margin)
        self.margin_form = margin_form
        self.score_form = score_form

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
        return {"distance": min_distance(d), "cac": cac_score(d, self.score_form)}

    def class_centers(self) -> Tensor:
        return self.anchors
