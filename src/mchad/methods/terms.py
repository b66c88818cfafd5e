"""Loss terms, OOD scores and argument checks shared by several methods.

Notation: a batch of ``B`` samples with labels ``y_i`` (``-1`` = outlier), ``C``
known classes, ``d_ic = ||f(x_i) - mu_c||_2^2`` the SQUARED distance of sample
``i`` to the center of class ``c``; ``K`` is the set of known samples
(``y_i >= 0``), ``O`` the set of outliers. Every term is a scalar and is zero,
with the autograd graph kept, when the samples it needs are absent from the batch; terms use
masks, not boolean indexing, so a training step never waits for the host.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mchad.errors import ConfigError
from mchad.methods.method import masked_mean, split_known

MarginForm = Literal["reference", "paper"]
"""How the outlier margin is measured (:func:`margin_term`)."""
MARGIN_FORMS: tuple[str, ...] = typing.get_args(MarginForm)


def cross_entropy_known(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy over the known samples:

    ``L_ce = 1/|K| sum_{i in K} -log softmax(logits_i)_{y_i}``.

    With ``logits = -d`` this is the soft-min cross-entropy of MCHAD's second term
    and CAC's tuplet term.
    """
    known, _ = split_known(y)
    return masked_mean(F.cross_entropy(logits, y.clamp(min=0), reduction="none"), known)


def center_term(distances: Tensor, y: Tensor, radius: float = 0.0) -> Tensor:
    """Center (hypersphere) term of the center loss, in the reference's reduction:

    ``L_center = 1/(|K| C) sum_{i in K} max(0, d_{i y_i} - radius)``.

    The mean runs over the masked ``|K| x C`` matrix (pytorch-ood's ``CenterLoss``),
    i.e. it is the per-sample center loss divided by ``C``; the paper weights were
    tuned with this reduction (docs/paper.md). ``radius`` bounds the squared distance.
    """
    known, _ = split_known(y)
    return masked_mean((true_class_distance(distances, y) - radius).relu(), known) / distances.shape[1]


def margin_term(distances: Tensor, y: Tensor, margin: float, form: str = "reference", radius: float = 0.0) -> Tensor:
    """Outlier term: pushes every outlier beyond the margin around every center, summed over
    outliers and classes.

    * ``form="reference"`` (the original MCHAD code, pytorch-ood's
      ``CenterRegularizationLoss``): ``L = sum_{i in O} sum_c max(0, m^2 - d_ic^2)``; with
      squared ``d`` this is zero once ``d_ic >= m``, so ``m`` bounds the squared distance.
    * ``form="paper"`` (MCHAD paper, Eq. for L_Theta): ``L = sum_{i in O} sum_c
      max(0, (r + m)^2 - d_ic)``, with ``r`` the radius and ``m`` a Euclidean length.
    """
    _, outlier = split_known(y)
    if form == "reference":
        # m^2 - d^2 = (m - d)(m + d) with m, d >= 0: factored so that a huge d cannot overflow d^2
        per_class = (margin - distances).relu() * (margin + distances)
    else:
        per_class = ((radius + margin) ** 2 - distances).relu()
    return torch.where(outlier.unsqueeze(1), per_class, torch.zeros_like(per_class)).sum()


def margin_threshold(margin: float, form: str = "reference", radius: float = 0.0) -> float:
    """The squared distance below which an outlier is inside the margin of a center, i.e. where
    :func:`margin_term` is non-zero: ``m`` in the reference form (``m^2 - d^2 > 0`` iff ``d < m``),
    ``(r + m)^2`` in the paper form."""
    return float(margin) if form == "reference" else (float(radius) + float(margin)) ** 2


def outliers_inside_margin(
    distances: Tensor, y: Tensor, margin: float, form: str = "reference", radius: float = 0.0
) -> Tensor:
    """Per sample (B,): whether it is an outlier inside the margin of at least one center, i.e. one
    that contributes to :func:`margin_term`. A mask, so no host synchronisation."""
    _, outlier = split_known(y)
    return outlier & (min_distance(distances) < margin_threshold(margin, form, radius))


def true_class_distance(distances: Tensor, y: Tensor) -> Tensor:
    """``d_{i y_i}`` per sample; rows of outliers (``y = -1``) hold ``d_{i 0}`` and must be masked."""
    return distances.gather(1, y.clamp(min=0).unsqueeze(1)).squeeze(1)


def min_distance(distances: Tensor) -> Tensor:
    """OOD score ``min_c d_ic``: squared distance to the closest center (higher = more anomalous)."""
    return distances.min(dim=1).values


def nearest_class(distances: Tensor) -> Tensor:
    """Predicted class ``argmin_c d_ic``: the closest center."""
    return distances.argmin(dim=1)


def check_non_negative(**values: float) -> None:
    """Raise :class:`ConfigError` for the first ``method.<name>`` value below zero."""
    for name, value in values.items():
        if float(value) < 0:
            raise ConfigError(f"method.{name}={value} is invalid: set method.{name} to a value >= 0")


def check_one_axis_per_class(method: str, n_classes: int, n_embedding: int, reason: str) -> None:
    """Raise :class:`ConfigError` unless ``n_embedding == n_classes`` (``reason`` says why ``method`` needs it)."""
    if int(n_embedding) != int(n_classes):
        raise ConfigError(
            f"method.n_embedding={n_embedding} must equal n_classes={n_classes} for {method} ({reason}): "
            f"set method.n_embedding={n_classes}"
        )


def check_margin_form(margin_form: str) -> None:
    """Raise :class:`ConfigError` unless ``margin_form`` is one of :data:`MARGIN_FORMS`."""
    if margin_form not in MARGIN_FORMS:
        raise ConfigError(
            f"method.margin_form={margin_form} is unknown: set method.margin_form to one of {', '.join(MARGIN_FORMS)}"
        )
