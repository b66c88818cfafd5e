"""The reference pipeline: how the original MCHAD code fed, trained and evaluated the network.

* Data sets in the style of ``torchvision.datasets.CIFAR10`` and pytorch-ood's
  ``TinyImages300k``: uint8 arrays turned into one PIL image per sample, then per-sample
  transforms ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``,
  ``Normalize(mean, std)`` (test: the last two), collated by DataLoader workers.
* fp32, NCHW contiguous tensors, a plain PyTorch loop: ID and outlier loaders zipped,
  ``loss = sum(method.loss(...))``, Adam with a per-batch cosine schedule.
* Evaluation: for each OOD set, the ID test set plus that OOD set through one DataLoader,
  so the ID set passes through the network once per OOD set, scored by pytorch-ood's
  ``OODMetrics``.

It uses the same uint8 arrays, backbone, method (loss and scores) and device as ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from pytorch_ood.metrics import OODMetrics
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from bench.timing import StepClock
from mchad.data.tensors import ImageTensors
from mchad.methods.method import Method


class PILImages(Dataset):
    """uint8 (N, 32, 32, 3) images served one PIL image at a time through ``transform``."""

    def __init__(self, data: ImageTensors, transform) -> None:
        self.images = data.images.numpy()
        self.labels = data.labels.numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(Image.fromarray(np.asarray(self.images[index]))), int(self.labels[index])


def train_transform(mean: Sequence[float], std: Sequence[float], padding: int) -> T.Compose:
    return T.Compose(
        [T.RandomCrop(32, padding=padding), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
    )


def test_transform(mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(mean, std)])


def loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


def train_batches(id_loader: DataLoader, outlier_loader: DataLoader):
    """``(x, y)`` with the outlier batch appended, as the data module yields them (but already float)."""
    for (x, y), (x_out, y_out) in zip(id_loader, outlier_loader):
        yield torch.cat([x, x_out]), torch.cat([y, torch.full_like(y_out, -1)])


def fresh_optimizer(parameters, lr: float, weight_decay: float, steps: int):
    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))


def train_steps(
    backbone: nn.Module,
    method: Method,
    batches,
    steps: int,
    device: torch.device,
    clock: StepClock,
    lr: float,
    weight_decay: float,
    prepare=None,
    autocast_dtype: torch.dtype | None = None,
) -> None:
    """A plain training loop over ``steps`` batches, ticking ``clock`` after each optimizer step.

    ``prepare(x)`` runs on the device before the forward pass (e.g. our batched
    augmentation); ``autocast_dtype`` turns on autocast (bf16 on a GPU, as ours uses).
    """
    parameters = [*backbone.parameters(), *method.parameters()]
    optimizer, scheduler = fresh_optimizer(parameters, lr, weight_decay, steps)
    backbone.train()
    method.train()
    for step, (x, y) in enumerate(batches):
        if step == steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if prepare is not None:
            x = prepare(x)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = method(backbone(x))
            loss = torch.stack(list(method.loss(out, y).values())).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        clock.tick()


@torch.no_grad()
def evaluate(
    backbone: nn.Module,
    method: Method,
    id_test: Dataset,
    ood_sets: dict[str, Dataset],
    batch_size: int,
    workers: int,
    device: torch.device,
) -> list[dict]:
    """One row per (OOD set, score): the ID set is re-run with every OOD set, scored by OODMetrics."""
    backbone.eval()
    method.eval()
    rows = []
    for name, ood in ood_sets.items():
        metrics = {score: OODMetrics() for score in method.score_names}
        for x, y in loader(ConcatDataset([id_test, ood]), batch_size, workers, shuffle=False):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = method(backbone(x))
            predictions = method.predict(out)
            for score, values in method.scores(out).items():
                metrics[score].update(values, y, predictions)
        for score, metric in metrics.items():
            rows.append({"ood_dataset": name, "score": score, **metric.compute()})
    return rows


def first(dataset: Dataset, count: int | None) -> Dataset:
    """The first ``count`` samples of ``dataset`` (all when None)."""
    return dataset if count is None or count >= len(dataset) else Subset(dataset, range(count))
