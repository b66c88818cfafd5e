"""Batched augmentation and normalisation on the training device.

The training images arrive as uint8 (B, H, W, 3). For training, each image gets the
reference code's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``: with
offsets (t, l) drawn uniformly from {0..2p} and a fair coin f,

    out[i, j] = padded[t + i, l + (W - 1 - j if f else j)],   padded = x with p zero pixels on each side

(flipping after the crop has the same distribution as torchvision's flip-then-crop).
All samples are cropped by one gather on the device, with no per-sample Python. Then

    x' = (x / 255 - mean) / std

returned as float (B, 3, H, W) in channels_last memory format.

The draws come from a generator of the augmentation's own, seeded for each batch from
``(seed, epoch, batch index)``: they never touch the global RNG, and a run resumed from
a checkpoint draws for its next batch exactly what the uninterrupted run drew.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

AUGMENT_STREAM = 2
"""Keeps the augmentation's seeds apart from the data module's streams (0: splits, 1: outliers)."""


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every one of ``keys`` (e.g. run seed, stream, epoch, batch)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def crop_flip(x: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int) -> Tensor:
    """Crop each image of ``x`` (B, H, W, C) from its zero-padded copy and mirror it where ``flip``.

    ``top``, ``left``: (B,) integer offsets in [0, 2 * padding] into the padded image;
    ``flip``: (B,) bool. Returns (B, C, H, W) with the dtype of ``x``.

    Every crop is a window of one strided view of the padded batch, so the whole
    batch is one gather. A mirrored crop at offset ``l`` is the plain crop at
    ``2p - l`` of the mirrored padded image, which the view also holds.
    """
    batch, height, width, _ = x.shape
    padded = F.pad(x, (0, 0, padding, padding, padding, padding))
    both = torch.cat([padded, padded.flip(2)])
    windows = both.unfold(1, height, 1).unfold(2, width, 1)  # (2B, 2p + 1, 2p + 1, C, H, W), a view
    source = torch.arange(batch, device=x.device) + batch * flip
    return windows[source, top, torch.where(flip, 2 * padding - left, left)]


class BatchAugment(nn.Module):
    """uint8 NHWC batch -> normalised float NCHW (channels_last); random crop + flip when training.

    Args:
        mean, std: per-channel statistics in [0, 1] units.
        crop_padding: zero padding p of the random crop (0 disables it).
        flip: random horizontal flips with probability 1/2.
        seed: the run's seed; with a batch's ``key`` it fixes that batch's crops and flips.
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], crop_padding: int = 4, flip: bool = True, seed: int = 0
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {list(mean)} and {list(std)}")
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std folded into one multiply and one add
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)
        self.crop_padding = crop_padding
        self.flip = flip
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device: torch.device, key: tuple[int, ...]) -> torch.Generator:
        """The generator on ``device`` for the batch ``key``, freshly seeded (re-seeding needs no host sync)."""
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        return generator.manual_seed(derive_seed(self.seed, AUGMENT_STREAM, *key))

    def forward(self, x: Tensor, train: bool, key: tuple[int, ...] = ()) -> Tensor:
        """``key``: the batch's ``(epoch, index)``; its draws depend on ``(seed, key)`` alone."""
        if train and (self.crop_padding > 0 or self.flip):
            batch = x.shape[0]
            generator = self.generator(x.device, key)
            offsets = torch.randint(0, 2 * self.crop_padding + 1, (2, batch), device=x.device, generator=generator)
            flips = torch.rand(batch, device=x.device, generator=generator) < (0.5 if self.flip else 0.0)
            images = crop_flip(x, offsets[0], offsets[1], flips, self.crop_padding)
        else:
            images = x.permute(0, 3, 1, 2)
        # the buffers' dtype: float32, or the model's under trainer.precision=bf16-true / 64-true, whose weights it meets
        out = torch.empty(images.shape, dtype=self.scale.dtype, device=x.device, memory_format=torch.channels_last)
        return out.copy_(images).mul_(self.scale).add_(self.shift)

    def extra_repr(self) -> str:
        return f"crop_padding={self.crop_padding}, flip={self.flip}, seed={self.seed}"
