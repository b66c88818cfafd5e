"""The interface every OOD method implements.

A method is the part of a detector that sits on top of the backbone's embedding
``z = f(x)``: its head (class centers, anchors, a linear layer, ...), its loss
terms, its class prediction and its OOD scores. The training loop, logging,
optimisation live in :class:`mchad.module.OODModule` and are shared by every
method; metrics are computed from the scores by :mod:`mchad.evaluation`.

Conventions:

* labels ``y`` hold known classes ``0..C-1``; outliers (outlier exposure) are ``-1``;
* :meth:`Method.loss` returns the *weighted* terms; their sum is minimised, each
  is logged as ``Loss/<term>/<stage>``;
* :meth:`Method.scores` returns OOD scores where higher means more anomalous.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from mchad.errors import ConfigError

Outputs = dict[str, Tensor]
"""What a method's forward returns: tensors whose first dimension is the batch."""


class Method(nn.Module, ABC):
    """Head, loss, prediction and OOD scores of one detector.

    Args:
        n_classes: number of known classes ``C``.
        n_embedding: dimension ``D`` of the backbone output ``z``.
    """

    #: names of the OOD scores returned by :meth:`scores`, in a stable order.
    score_names: tuple[str, ...] = ()

    #: whether the backbone's output ``z`` are class logits, i.e. its last linear layer is the class head:
    #: what logit detectors (msp, energy, odin, ...) and head detectors (vim, dice, react, ...) need
    #: (:mod:`mchad.evaluation.detectors`)
    linear_head: bool = False
    #: what the backbone's output ``z`` is to this method, named when a detector is refused
    embedding_kind: str = "an embedding"

    def __init__(self, n_classes: int, n_embedding: int) -> None:
        super().__init__()
        if int(n_classes) < 2:
            raise ConfigError(f"n_classes={n_classes} is invalid: a classifier needs at least 2 known classes")
        if int(n_embedding) < 1:
            raise ConfigError(
                f"method.n_embedding={n_embedding} is invalid: set method.n_embedding to a positive integer"
            )
        self.n_classes = int(n_classes)
        self.n_embedding = int(n_embedding)

    #: weight of the loss term on outliers (label -1); 0 = no such term. Methods with one set it.
    weight_oe: float = 0.0

    @property
    def uses_outliers(self) -> bool:
        """Whether the loss has a term on outliers (label -1), so training needs an outlier set."""
        return self.weight_oe > 0

    @abstractmethod
    def forward(self, z: Tensor) -> Outputs:
        """Map the embedding ``z`` (B x D) to the method's outputs."""

    @abstractmethod
    def loss(self, out: Outputs, y: Tensor) -> dict[str, Tensor]:
        """Weighted loss terms (scalars) for outputs ``out`` and labels ``y`` (-1 = outlier)."""

    @abstractmethod
    def predict(self, out: Outputs) -> Tensor:
        """Predicted class index per sample."""

    @abstractmethod
    def scores(self, out: Outputs) -> dict[str, Tensor]:
        """OOD scores per sample, keyed by :attr:`score_names`; higher = more anomalous."""

    def diagnostics(self, out: Outputs, y: Tensor) -> dict[str, Tensor]:
        """Scalars that explain a training step without being part of the loss (e.g. how many outliers
        a margin term reaches); the loop logs their epoch means as ``Diagnostics/<name>/train``."""
        return {}

    def class_centers(self) -> Tensor | None:
        """Where the classes sit in the embedding space (C x D), if the method has centers; for plots."""
        return None

    def on_train_epoch_start(self) -> None:
        """Called by the training loop at the start of every training epoch."""

    def on_train_epoch_end(self) -> None:
        """Called by the training loop at the end of every training epoch."""


def split_known(y: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean masks ``(known, outlier)`` for labels where -1 marks an outlier."""
    outlier = y < 0
    return ~outlier, outlier


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the rows where ``mask`` is true; 0 (graph kept) when none is.

    Masks instead of boolean indexing, so no host synchronisation in a training step.
    """
    mask = mask.reshape(mask.shape + (1,) * (values.dim() - mask.dim()))
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / (mask.sum() * (values.numel() // max(1, mask.numel()))).clamp(min=1)
