"""Class centers in the embedding space and squared Euclidean distances to them.

Every distance here is the SQUARED Euclidean distance
``d(z, mu) = ||z - mu||_2^2``, as in pytorch-ood's class centers, which the
reference MCHAD code used.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def pairwise_squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """``D[i, j] = ||x_i - y_j||_2^2`` for ``x`` (N x D) and ``y`` (M x D); returns N x M.

    Computed from the differences rather than by the expansion
    ``||x||^2 + ||y||^2 - 2 x.y`` (pytorch-ood's way): the expansion cancels
    catastrophically for nearby points far from the origin and can come out
    negative. The N x M x D intermediate is small for the class counts used here.
    The sum runs in at least float32, even under autocast, since half precision would lose
    the small distances that decide classification.
    """
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        diff = x.to(dtype).unsqueeze(1) - y.to(dtype).unsqueeze(0)
        return diff.pow(2).sum(dim=2)


def class_sums(z: Tensor, y: Tensor, known: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums of the known rows of ``z`` (B x D) and their counts: ``(C x D, C)``.

    ``known`` (B,) masks the rows that count; the others (outliers, label -1) add zeros.
    Sums by ``index_add`` rather than ``bincount``, whose output size depends on the data.
    """
    weight = known.to(z.dtype)
    sums = z.new_zeros(n_classes, z.shape[1]).index_add(0, y.clamp(min=0), z * weight.unsqueeze(1))
    counts = z.new_zeros(n_classes).index_add(0, y.clamp(min=0), weight)
    return sums, counts


class ClassCenters(nn.Module):
    """Learnable class centers ``mu_c`` (C x D); calling it returns the squared distances (B x C).

    Initialisation follows pytorch-ood's ``CenterLoss`` (used by its ``MCHADLoss``):
    the identity matrix when ``C == D`` (the centers start as unit vectors, pairwise
    distance 2), otherwise a draw from the standard normal distribution.

    Args:
        n_classes: number of centers ``C``.
        n_embedding: dimension ``D`` of the embedding space.
    """

    def __init__(self, n_classes: int, n_embedding: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.empty(n_classes, n_embedding))
        if n_classes == n_embedding:
            nn.init.eye_(self.centers)
        else:
            nn.init.normal_(self.centers)

    def forward(self, z: Tensor) -> Tensor:
        """Squared distances of the embeddings ``z`` (B x D) to every center: B x C."""
        return pairwise_squared_distances(z, self.centers)


class RunningClassMeans(nn.Module):
    """Class centers estimated as the mean embedding of each class, accumulated over batches.

    ``update`` adds a batch to per-class sums and counts; ``means[c]`` is
    ``sum_c / count_c`` over everything seen since the last ``reset``. ``reset``
    clears the sums and counts but keeps ``means``, so a class not yet seen in the
    current accumulation keeps its previous estimate instead of becoming undefined.

    Unlike pytorch-ood's ``RunningCenters``, which averages per-batch means with one
    batch counter shared by all classes (so a class missing from a batch is
    down-weighted), this is the exact mean over all samples of each class.

    Args:
        n_classes: number of classes ``C``.
        n_embedding: dimension ``D`` of the embedding space.
    """

    def __init__(self, n_classes: int, n_embedding: int) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(n_classes, n_embedding))
        self.register_buffer("counts", torch.zeros(n_classes))
        self.register_buffer("means", torch.zeros(n_classes, n_embedding))

    def reset(self) -> None:
        """Start a new accumulation (e.g. a new training epoch)."""
        self.sums.zero_()
        self.counts.zero_()

    @torch.no_grad()
    def update(self, z: Tensor, y: Tensor, known: Tensor) -> None:
        """Add the rows of ``z`` (B x D) where ``known`` (B,) to the running means of their classes ``y`` (B,).

        Masks rather than boolean indexing, so no host synchronisation in a training step.
        """
        sums, counts = class_sums(z.to(self.sums.dtype), y, known, len(self.counts))
        self.sums += sums
        self.counts += counts
        seen = (self.counts > 0).unsqueeze(1)
        self.means.copy_(torch.where(seen, self.sums / self.counts.clamp(min=1).unsqueeze(1), self.means))

    def forward(self, z: Tensor) -> Tensor:
        """Squared distances of the embeddings ``z`` (B x D) to every class mean: B x C."""
        return pairwise_squared_distances(z, self.means)
