"""Batched crop/flip/normalisation against torchvision's per-image transforms."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from mchad.data.augment import BatchAugment, crop_flip

MEAN, STD = (0.4914, 0.4824, 0.4467), (0.2471, 0.2435, 0.2616)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def plain_normalise(x: torch.Tensor) -> torch.Tensor:
    return TF.normalize(x.permute(0, 3, 1, 2).float() / 255, list(MEAN), list(STD))


def test_output_is_normalised_float_nchw_channels_last(batch: torch.Tensor) -> None:
    for train in (True, False):
        out = BatchAugment(MEAN, STD)(batch, train=train)
        assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-6), (torch.bfloat16, 2e-2)])
def test_output_takes_the_dtype_the_model_was_cast_to(
    batch: torch.Tensor, dtype: torch.dtype, tolerance: float
) -> None:
    """Lightning's 64-true and bf16-true cast the whole module, the augmentation with it: its output must meet
    weights of that dtype (a float32 output made every step of such a run fail)."""
    out = BatchAugment(MEAN, STD).to(dtype)(batch, train=False)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), plain_normalise(batch), atol=tolerance, rtol=tolerance)


def test_evaluation_and_disabled_augmentation_equal_plain_normalisation(batch: torch.Tensor) -> None:
    expected = plain_normalise(batch)
    torch.testing.assert_close(BatchAugment(MEAN, STD)(batch, train=False), expected)
    torch.testing.assert_close(BatchAugment(MEAN, STD, crop_padding=0, flip=False)(batch, train=True), expected)


def test_crop_flip_equals_torchvision_crop_of_the_padded_image(batch: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(1)
    top, left = torch.randint(0, 9, (2, len(batch)), generator=generator)
    flip = torch.rand(len(batch), generator=generator) < 0.5
    out = crop_flip(batch, top, left, flip, padding=4)
    for i in range(len(batch)):
        padded = TF.pad(batch[i].permute(2, 0, 1), [4], fill=0)
        expected = TF.crop(padded, int(top[i]), int(left[i]), 32, 32)
        if flip[i]:
            expected = TF.horizontal_flip(expected)
        assert torch.equal(out[i], expected), f"sample {i}"


def test_crop_is_a_shifted_window_with_zero_border(batch: torch.Tensor) -> None:
    shifted = crop_flip(batch[:1], torch.tensor([0]), torch.tensor([8]), torch.tensor([False]), padding=4)
    assert bool((shifted[0, :, :4] == 0).all()) and bool((shifted[0, :, :, 28:] == 0).all())
    assert torch.equal(shifted[0, :, 4:, :28], batch[0, :28, 4:].permute(2, 0, 1))


def test_training_draws_all_offsets_and_flips_about_half(batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    images = batch[:1].expand(4000, -1, -1, -1)
    augmented = BatchAugment(MEAN, STD, crop_padding=0, flip=True)(images, train=True)
    original = BatchAugment(MEAN, STD)(batch[:1], train=False)
    is_mirrored = (augmented == original.flip(-1)).flatten(1).all(1)
    is_original = (augmented == original).flatten(1).all(1)
    assert bool((is_mirrored ^ is_original).all())
    assert abs(is_mirrored.float().mean().item() - 0.5) < 0.04

    cropped = BatchAugment(MEAN, STD, crop_padding=4, flip=False)(images, train=True)
    distinct = {sample.numpy().tobytes() for sample in cropped[:2000]}
    assert len(distinct) == 81  # every one of the 9 x 9 (top, left) offsets


def test_augment_needs_rgb_statistics() -> None:
    with pytest.raises(ValueError, match="3 values"):
        BatchAugment([0.5], [0.5])
