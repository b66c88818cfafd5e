"""II: the ii-loss (intra-class spread minus inter-class separation) with class-mean centers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mchad.methods.method import Method, Outputs, masked_mean, split_known
from mchad.methods.terms import check_non_negative, min_distance, nearest_class
from mchad.nn.centers import RunningClassMeans, class_sums, pairwise_squared_distances


def batch_class_means(z: Tensor, y: Tensor, known: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Mean embedding of every class among the known samples: ``(means (C x D), present (C,))``.

    Rows of absent classes are zero and ``present`` marks the others. Differentiable
    with respect to ``z``.
    """
    sums, counts = class_sums(z, y, known, n_classes)
    return sums / counts.clamp(min=1).unsqueeze(1), counts > 0


def intra_spread(z: Tensor, y: Tensor, known: Tensor, means: Tensor) -> Tensor:
    """``1/|K| sum_{i in K} ||z_i - mu_{y_i}||^2`` over the known samples ``K``; 0 when there are none."""
    return masked_mean((z - means[y.clamp(min=0)]).pow(2).sum(dim=1), known)


def inter_separation(means: Tensor, present: Tensor) -> Tensor:
    """``min_{j != k, both present} ||mu_j - mu_k||^2``; zero (undefined) with fewer than two present rows."""
    d = pairwise_squared_distances(means, means)
    pairs = present.unsqueeze(0) & present.unsqueeze(1) & ~torch.eye(len(means), dtype=torch.bool, device=means.device)
    closest = torch.where(pairs, d, torch.inf).min()
    return torch.where(pairs.any(), closest, 0.0)


class II(Method):
    """ii-loss: learn an embedding where classes are tight and far apart; centers are class means.

    Hassen, Chan: *Learning a Neural-network-based Representation for Open Set
    Recognition*, SDM 2020 (https://arxiv.org/abs/1802.04365).

    The embedding is ``z = BN(f(x))``, a BatchNorm without affine parameters
    (optional): the normalised embedding keeps the separation term from growing by
    mere scaling. The reference code's BatchNorm had affine parameters. With ``K`` the known samples of the batch,
    ``Y`` the classes present in it and ``mu_c`` the class centers::

        spread:     1/|K| sum_{i in K} ||z_i - mu_{y_i}||^2
        separation: -w_sep * min_{j, k in Y, j != k} ||mu_j - mu_k||^2

    In training, ``mu_c`` are the means of the batch (gradients flow through them),
    and every batch is added to running class means (:class:`~mchad.nn.centers.RunningClassMeans`)
    that are reset at the start of each training epoch; so they are the class means of
    the epoch's embeddings, an online approximation of the paper's means over the
    training set after training. Outside training, ``mu_c`` are those running means.
    Prediction: the nearest running mean; OOD score ``distance``: the squared distance
    to it.

    Differences from pytorch-ood 0.4.0 ``IILoss``: its running centers average
    per-batch means with one counter for all classes (a class absent from a batch is
    down-weighted); here they are exact per-class means. With fewer than two classes
    in a batch the separation is undefined; pytorch-ood then returns ``-w_sep * 1e24``,
    here the term is zero. Otherwise the losses agree.

    Args:
        n_classes: number of known classes ``C``.
        n_embedding: embedding dimension ``D``.
        weight_separation: ``w_sep`` (1 in the paper; the reference used 100).
        batch_norm: apply ``BatchNorm1d(D, affine=False)`` to the embedding.
    """

    score_names = ("distance",)
    embedding_kind = "an embedding whose class centers are the class means, no linear class head"

    def __init__(
        self, n_classes: int, n_embedding: int, weight_separation: float = 1.0, batch_norm: bool = True
    ) -> None:
        super().__init__(n_classes, n_embedding)
        check_non_negative(weight_separation=weight_separation)
        self.weight_separation = float(weight_separation)
        self.norm = nn.BatchNorm1d(self.n_embedding, affine=False) if batch_norm else nn.Identity()
        self.centers = RunningClassMeans(self.n_classes, self.n_embedding)

    def forward(self, z: Tensor) -> Outputs:
        # the spread and separation are sums of squares: keep them out of half precision
        embedding = self.norm(z.float())
        return {"embedding": embedding, "distances": self.centers(embedding)}

    def loss(self, out: Outputs, y: Tensor) -> dict[str, Tensor]:
        z = out["embedding"]
        known, _ = split_known(y)
        if self.training:
            means, present = batch_class_means(z, y, known, self.n_classes)
            self.centers.update(z.detach(), y, known)
        else:
            means = self.centers.means
            present = class_sums(z, y, known, self.n_classes)[1] > 0
        return {
            "spread": intra_spread(z, y, known, means),
            "separation": -self.weight_separation * inter_separation(means, present),
        }

    def predict(self, out: Outputs) -> Tensor:
        return nearest_class(out["distances"])

    def scores(self, out: Outputs) -> dict[str, Tensor]:
        return {"distance": min_distance(out["distances"])}

    def class_centers(self) -> Tensor:
        if isinstance(self.norm, nn.BatchNorm1d):
            # the means live behind the BatchNorm: map them back to the backbone's space with its running statistics
            return self.centers.means * (self.norm.running_var + self.norm.eps).sqrt() + self.norm.running_mean
        return self.centers.means

    def on_train_epoch_start(self) -> None:
        self.centers.reset()
