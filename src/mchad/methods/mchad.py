"""MCHAD and G-MCHAD: Multi-Class Hypersphere Anomaly Detection."""

from __future__ import annotations

from torch import Tensor

from mchad.methods.method import Method, Outputs
from mchad.methods.terms import (
    center_term,
    check_margin_form,
    check_non_negative,
    cross_entropy_known,
    margin_term,
    min_distance,
    nearest_class,
)
from mchad.nn.centers import ClassCenters


class MCHAD(Method):
    """Multi-Class Hypersphere Anomaly Detection; G-MCHAD when ``weight_oe > 0``.

    Kirchheim, Filax, Ortmeier: *Multi-Class Hypersphere Anomaly Detection*, ICPR 2022
    (https://ieeexplore.ieee.org/document/9956337, code: https://gitlab.com/kkirchheim/mchad).

    One learnable center ``mu_c`` per class (:class:`~mchad.nn.centers.ClassCenters`);
    ``d_ic = ||f(x_i) - mu_c||_2^2`` (squared). With ``K`` the known samples of the batch,
    ``O`` its outliers (label -1), ``C`` the number of classes::

        center: L_Lambda = w_center * 1/(|K| C) sum_{i in K} max(0, d_{i y_i} - rho)
        ce:     L_Delta  = w_ce * 1/|K| sum_{i in K} -log( exp(-d_{i y_i}) / sum_c exp(-d_ic) )
        margin: L_Theta  = w_oe * sum_{i in O} sum_c max(0, m^2 - d_ic^2)            (reference)
                        or w_oe * sum_{i in O} sum_c max(0, (r + m)^2 - d_ic)       (paper)

    ``margin_form="reference"`` (default) is the code that produced the paper's
    numbers, where the margin was tuned: ``m`` bounds the squared distance and
    ``rho = radius`` is compared with the squared distance. ``margin_form="paper"``
    is the paper's notation: ``r = radius`` and ``m`` are Euclidean lengths and
    ``rho = r^2``. The center term's ``1/(|K| C)`` is the reference's reduction
    (the paper writes a mean over samples); the margin term is summed, not averaged,
    as in the reference, which is why G-MCHAD's ``w_oe`` is tiny (1e-5 .. 5e-4).
    The soft-min cross-entropy equals ``log(1 + sum_{c != y} exp(d_y - d_c))``.

    Prediction: the nearest center. OOD score ``distance``: ``min_c d_ic``.

    Args:
        n_classes: number of known classes ``C``.
        n_embedding: embedding dimension ``D`` (the centers live there).
        weight_center: ``w_center``.
        weight_ce: ``w_ce``.
        weight_oe: ``w_oe``; > 0 turns on the margin term on outliers (G-MCHAD).
        margin: ``m``.
        radius: hypersphere radius (``rho`` resp. ``r`` above).
        margin_form: ``"reference"`` or ``"paper"``.
    """

    score_names = ("distance",)

    def __init__(
        self,
        n_classes: int,
        n_embedding: int,
        weight_center: float = 1.0,
        weight_ce: float = 1.0,
        weight_oe: float = 0.0,
        margin: float = 1.0,
        radius: float = 0.0,
        margin_form: str = "reference",
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
            "ce": self.weight_ce * cross_entropy_known(-d, y),
        }
        if self.uses_outliers:
            terms["margin"] = self.weight_oe * margin_term(d, y, self.margin, self.margin_form, self.radius)
        return terms

    def predict(self, out: Outputs) -> Tensor:
        return nearest_class(out["distances"])

    def scores(self, out: Outputs) -> dict[str, Tensor]:
        return {"distance": min_distance(out["distances"])}

    def class_centers(self) -> Tensor:
        return self.centers.centers.detach()
