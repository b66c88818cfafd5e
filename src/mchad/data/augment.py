"""Batched augmentation and normalisation on the training device.

The training images arrive as uint8 (B, H, W, 3). For training, each image gets the
reference code's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``: with
offsets (t, l) drawn uniformly from {0..2p} and a fair coin f,

    out[i, j] = padded[t + i, l + (W - 1 - j if f else j)],   padded = x with p zero pixels on each side

(flipping after the crop has the same distribution as torchvision's flip-then-crop).
All samples are cropped by one gather on the device, with no per-sample Python. Then

    x' = (x / 255 - mean) / std

returned as float (B, 3, H, W) in channels_last memory format.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def crop_flip(x: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int) -> Tensor:
    """Crop each image of ``x`` (B, H, W, C) from its zero-padded copy and mirror it where ``flip``.

    ``top``, ``left``: (B,) integer offsets in [0, 2 * padding] into the padded image;
    ``flip``: (B,) bool. Returns (B, H, W, C) with the dtype of ``x``.
    """
    batch, height, width, _ = x.shape
    steps_y = torch.arange(height, device=x.device)
    steps_x = torch.arange(width, device=x.device)
    rows = top[:, None] - padding + steps_y
    cols = left[:, None] - padding + torch.where(flip[:, None], width - 1 - steps_x, steps_x)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    index = torch.arange(batch, device=x.device)[:, None, None]
    window = x[index, rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]]
    return window * inside[..., None].to(x.dtype)


class BatchAugment(nn.Module):
    """uint8 NHWC batch -> normalised float NCHW (channels_last); random crop + flip when training.

    Args:
        mean, std: per-channel statistics in [0, 1] units.
        crop_padding: zero padding p of the random crop (0 disables it).
        flip: random horizontal flips with probability 1/2.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop_padding: int = 4, flip: bool = True) -> None:
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

    def forward(self, x: Tensor, train: bool) -> Tensor:
        if train and (self.crop_padding > 0 or self.flip):
            batch = x.shape[0]
            offsets = torch.randint(0, 2 * self.crop_padding + 1, (2, batch), device=x.device)
            flips = torch.rand(batch, device=x.device) < (0.5 if self.flip else 0.0)
            x = crop_flip(x, offsets[0], offsets[1], flips, self.crop_padding)
        # NHWC permuted to NCHW is already channels_last in memory
        images = x.permute(0, 3, 1, 2).float()
        return (images * self.scale).add_(self.shift).contiguous(memory_format=torch.channels_last)

    def extra_repr(self) -> str:
        return f"crop_padding={self.crop_padding}, flip={self.flip}"
