"""MCHAD and G-MCHAD: Multi-Class Hypersphere Anomaly Detection."""

from __future__ import annotations

import torch
from torch import Tensor

from mchad.methods.method import Method, Outputs, masked_mean, split_known
from mchad.methods.terms import (
    MarginForm,
    center_term,
    check_margin_form,
    check_non_negative,
    cross_entropy_known,
    margin_term,
    min_distance,
    nearest_class,
    outliers_inside_margin,
    true_class_distance,
)
from mchad.nn.centers import ClassCenters, pairwise_squared_distances


class MCHAD(Method):
    """Multi-Class Hypersphere Anomaly Detection; G-MCHAD when ``weight_oe > 0``.

    Kirchheim, Filax, Ortmeier: *Multi-Class Hypersphere Anomaly Detection*, ICPR 2022
    (https://ieeexplore.ieee.org/document/9956337, code: https://gitlab.com/kkirchheim/mchad).

    One learnable center ``mu_c`` per class (:class:`~mchad.nn.centers.ClassCenters`);
    ``d_ic = ||f(x_i) - mu_c||_2^2`` (squared). With ``K`` the known samples of the batch,
    ``O`` its outliers (label -1), ``C`` the number of classes::

        center: L_Lambda = w_center * 1/(|K| C) sum_{i in K} max(0, d_{i y_i} - rho)
        ce:     L_Delta  = w_ce * 1/|K| sum_{i in K} -log( exp(-d_{i y_i}) / sum_c exp(-d_ic) )
        margin: L_Theta  = w_oe * sum_{i in O} sum_c max(0, (r + m)^2 - d_ic)       (paper)
                        or w_oe * sum_{i in O} sum_c max(0, m^2 - d_ic^2)            (reference)

    The two margin forms differ in units. ``margin_form="paper"`` is the paper's formula:
    ``r = radius`` and ``m`` are Euclidean lengths, ``rho = r^2``, and an outlier is pushed
    out while its squared distance to a center is below ``(r + m)^2`` (16 for ``m = 4``),
    with a constant gradient ``-w_oe`` per (outlier, center) pair. ``margin_form="reference"``
    is the original authors' code (and pytorch-ood's ``CenterRegularizationLoss``), which
    squares the already squared distance: the term is non-zero only while ``d_ic < m``,
    i.e. ``m`` bounds the SQUARED distance (Euclidean distance below ``sqrt(m)``, 2 for
    ``m = 4``), its gradient is ``-2 w_oe d_ic``, and ``rho = radius`` is compared with the
    squared distance too.

    The G-MCHAD configurations (``method=gmchad``) use ``paper``: on CIFAR-10 with Tiny
    ImageNet outliers the learned squared distances of outliers to their nearest center lie
    around 10-20, far above the reference form's reach of 4, so that form's outlier term was
    zero at every step and G-MCHAD trained as MCHAD (docs/gmchad.md has the measurement).
    ``reference`` stays selectable (``method.margin_form=reference``) and is the constructor's
    default, as in pytorch-ood; the paper's table numbers were produced with it (and weights
    tuned for it). The center term's ``1/(|K| C)`` is the reference's reduction (the paper
    writes a mean over samples); the margin term is summed, not averaged, as in the reference,
    which is why G-MCHAD's ``w_oe`` is tiny (1e-5 .. 5e-4).
    The soft-min cross-entropy equals ``log(1 + sum_{c != y} exp(d_y - d_c))``.

    Prediction: the nearest center. OOD score ``distance``: ``min_c d_ic``.

    Args:
        n_classes: number of known classes ``C``.
        n_embedding: embedding dimension ``D`` (the centers live there).
        weight_center: ``w_center``.
        weight_ce: ``w_ce``.
        weight_oe: ``w_oe``; > 0 turns on the margin term on outliers (G-MCHAD).
        margin: ``m`` (a Euclidean length in the paper form, a squared distance in the reference form).
        radius: hypersphere radius (``r`` resp. ``rho`` above).
        margin_form: ``"paper"`` or ``"reference"`` (the default here; ``method=gmchad`` sets ``"paper"``).
    """

    score_names = ("distance",)
    embedding_kind = "an embedding with a learned center per class, no linear class head"

    def __init__(
        self,
        n_classes: int,
        n_embedding: int,
        weight_center: float = 1.0,
        weight_ce: float = 1.0,
        weight_oe: float = 0.0,
        margin: float = 1.0,
        radius: float = 0.0,
        margin_form: MarginForm = "reference",
    ) -> None:
        super().__init__(n_classes, n_embedding)
        check_non_negative(
            weight_center=weight_center, weight_ce=weight_ce, weight_oe=weight_oe, margin=margin, radius=radius
        )
        check_margin_form(margin_form)
        self.centers = ClassCenters(self.n_classes, self.n_embedding)
        self.weight_center = float(weight_center)
        self.weight_ce = float(weight_ce)
        self.weight_oe = float(weight_oe)
        self.margin = float(margin)
        self.radius = float(radius)
        self.margin_form = margin_form

    def forward(self, z: Tensor) -> Outputs:
        return {"distances": self.centers(z)}

    def loss(self, out: Outputs, y: Tensor) -> dict[str, Tensor]:
        d = out["distances"]
        center_radius = self.radius if self.margin_form == "reference" else self.radius**2
        terms = {
            "center": self.weight_center * center_term(d, y, center_radius),
            "ce": self.weight_ce * cross_entropy_known(self.logits(out), y),
        }
        if self.uses_outliers:
            terms["margin"] = self.weight_oe * margin_term(d, y, self.margin, self.margin_form, self.radius)
        return terms

    def logits(self, out: Outputs) -> Tensor:
        """What the cross-entropy term classifies with: ``-d``, the soft-min over the centers."""
        return -out["distances"]

    def diagnostics(self, out: Outputs, y: Tensor) -> dict[str, Tensor]:
        """Why the margin term is (in)active, all in squared-distance units, no host sync:

        * ``known_center_distance``: mean ``d_{i y_i}`` of the known samples (how tight the classes are);
        * ``center_min_distance``: smallest ``||mu_a - mu_b||^2`` over pairs of centers (the spread);

        and with an outlier term (``weight_oe > 0``) also

        * ``outliers_in_margin``: fraction of the batch's outliers inside the margin of at least one
          center (``min_c d_ic`` below ``m``, reference form, or ``(r + m)^2``, paper form);
        * ``margin_term``: the outlier term before its weight ``w_oe`` (summed over the batch);
        * ``outlier_nearest_distance``: mean over outliers of ``min_c d_ic``;
        * ``outlier_nearest_distance_min``: the smallest ``min_c d_ic`` of the batch's outliers
          (the term is zero iff it is at or above the margin). 0 for a batch without outliers.
        """
        d = out["distances"].detach()
        known, outlier = split_known(y)
        mu = self.centers.centers.detach()
        between = pairwise_squared_distances(mu, mu)
        eye = torch.eye(len(mu), dtype=torch.bool, device=mu.device)
        stats = {
            "known_center_distance": masked_mean(true_class_distance(d, y), known),
            "center_min_distance": torch.where(eye, torch.full_like(between, float("inf")), between).min(),
        }
        if not self.uses_outliers:
            return stats
        nearest = min_distance(d)
        inside = outliers_inside_margin(d, y, self.margin, self.margin_form, self.radius)
        closest = torch.where(outlier, nearest, torch.full_like(nearest, float("inf"))).min()
        return stats | {
            "outliers_in_margin": masked_mean(inside.to(d.dtype), outlier),
            "margin_term": margin_term(d, y, self.margin, self.margin_form, self.radius),
            "outlier_nearest_distance": masked_mean(nearest, outlier),
            "outlier_nearest_distance_min": torch.where(outlier.any(), closest, torch.zeros_like(closest)),
        }

    def predict(self, out: Outputs) -> Tensor:
        return nearest_class(out["distances"])

    def scores(self, out: Outputs) -> dict[str, Tensor]:
        return {"distance": min_distance(out["distances"])}

    def class_centers(self) -> Tensor:
        return self.centers.centers.detach()
