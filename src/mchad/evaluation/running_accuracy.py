"""Closed-set accuracy accumulated over the batches of an epoch, without host synchronisation."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class KnownClassAccuracy(Metric):
    """``#{i : pred_i = y_i, y_i >= 0} / #{i : y_i >= 0}`` over every batch since the last reset.

    Outliers (label -1) do not count. ``update`` only adds on the device: torchmetrics'
    ``MeanMetric`` checks its input for NaN with ``if nans.any()``, a host
    synchronisation on every training step. The counts are summed over processes under DDP.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("known", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, labels: Tensor) -> None:
        known = labels >= 0
        self.correct += ((pred == labels) & known).sum()
        self.known += known.sum()

    def compute(self) -> Tensor:
        """The accuracy as float32; 0 before any sample with a known class."""
        return (self.correct / self.known.clamp(min=1)).float()
