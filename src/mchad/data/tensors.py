"""A decoded data set held as two tensors: uint8 images and int64 labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

OOD_LABEL = -1


@dataclass(frozen=True)
class ImageTensors:
    """Images (N, 32, 32, 3) uint8 RGB in NHWC order and labels (N,) int64.

    Known classes are 0..C-1; OOD and outlier samples carry :data:`OOD_LABEL` (-1).
    The images may be a memory map of the on-disk cache, so they are indexed, never
    converted as a whole.
    """

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            expected = f"int64 ({len(self.images)},)"
            raise ValueError(f"labels must be {expected}, got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Tensor) -> ImageTensors:
        """A copy holding only the samples at ``indices`` (in that order)."""
        return ImageTensors(self.images[indices], self.labels[indices])

    def as_ood(self) -> ImageTensors:
        """The same images, every label replaced by :data:`OOD_LABEL`."""
        return ImageTensors(self.images, torch.full_like(self.labels, OOD_LABEL))
