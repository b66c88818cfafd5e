"""The fast path computes what the plain path computes.

Fast path: uint8 batches, ``BatchAugment`` on the device (one batched crop/flip gather,
normalisation, channels_last), optional bf16 autocast and ``torch.compile``; metrics from
one sort. Plain path: what the reference code did: per-sample torchvision ops on PIL
images, contiguous NCHW, fp32, eager, scikit-learn's metrics.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader

from mchad.data.augment import BatchAugment
from mchad.evaluation.evaluator import evaluate
from mchad.evaluation.metrics import ood_metrics
from mchad.evaluation.oracle import sklearn_metrics
from mchad.methods.mchad import MCHAD
from mchad.module import OODModule
from mchad.nn.wrn import WideResNet

MEAN = (0.4914, 0.4824, 0.4467)
STD = (0.2471, 0.2435, 0.2616)
PADDING = 4
N_CLASSES = 10


def gmchad() -> MCHAD:
    """The cifar10-gmchad head and loss (docs/paper.md)."""
    return MCHAD(N_CLASSES, 16, weight_center=1.0, weight_ce=1.5, weight_oe=1e-5, margin=4.0)


def small_backbone() -> WideResNet:
    return WideResNet(depth=10, widen_factor=1, drop_rate=0.0, n_outputs=16)


def random_batch(n_known: int, n_outliers: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_known + n_outliers, 32, 32, 3), dtype=torch.uint8, generator=generator)
    labels = torch.cat([torch.arange(n_known) % N_CLASSES, torch.full((n_outliers,), -1)])
    return images, labels


def total_loss(backbone: torch.nn.Module, method: MCHAD, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack(list(method.loss(method(backbone(x)), y).values())).sum()


def torchvision_views(image: torch.Tensor) -> dict[tuple[int, int, bool], torch.Tensor]:
    """Every ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` outcome of one uint8 (H, W, 3) image."""
    padded = TF.pad(image.permute(2, 0, 1), [PADDING] * 4, fill=0)
    views = {}
    for top in range(2 * PADDING + 1):
        for left in range(2 * PADDING + 1):
            crop = TF.crop(padded, top, left, 32, 32)
            views[(top, left, False)] = crop
            views[(top, left, True)] = TF.hflip(crop)
    return {key: view.permute(1, 2, 0) for key, view in views.items()}


def decisions_of(augmented: torch.Tensor, images: torch.Tensor, augment: BatchAugment) -> list[tuple[int, int, bool]]:
    """The (top, left, flip) that turns each image into its augmented version (exactly one matches random images)."""
    found = []
    for image, out in zip(images, augmented):
        views = torchvision_views(image)
        normalised = augment(torch.stack(list(views.values())), train=False)
        matches = [key for key, candidate in zip(views, normalised) if torch.equal(candidate, out)]
        assert len(matches) == 1, f"augmented image matches {len(matches)} torchvision crop/flip outcomes, expected 1"
        found.extend(matches)
    return found


def plain_path(images: torch.Tensor, decisions: list[tuple[int, int, bool]]) -> torch.Tensor:
    """The reference pipeline per sample: PIL image, pad + crop + flip, to_tensor, normalize; stacked NCHW."""
    samples = []
    for image, (top, left, flip) in zip(images, decisions):
        pil = TF.crop(TF.pad(Image.fromarray(image.numpy()), PADDING, fill=0), top, left, 32, 32)
        pil = TF.hflip(pil) if flip else pil
        samples.append(TF.normalize(TF.to_tensor(pil), MEAN, STD))
    return torch.stack(samples)


def test_batch_augment_and_channels_last_give_the_plain_path_loss():
    images, labels = random_batch(n_known=12, n_outliers=12, seed=0)
    augment = BatchAugment(MEAN, STD, crop_padding=PADDING, flip=True)
    torch.manual_seed(0)
    fast_x = augment(images, train=True)
    decisions = decisions_of(fast_x, images, augment)
    plain_x = plain_path(images, decisions)

    assert len(set(decisions)) > 1, "the crops and flips should vary over the batch"
    assert fast_x.is_contiguous(memory_format=torch.channels_last) and plain_x.is_contiguous()
    torch.testing.assert_close(fast_x, plain_x, rtol=0, atol=1e-5)

    torch.manual_seed(0)
    backbone, method = small_backbone(), gmchad()
    fast_backbone = copy.deepcopy(backbone).to(memory_format=torch.channels_last)
    fast_loss = total_loss(fast_backbone, method, fast_x, labels)
    plain_loss = total_loss(backbone, method, plain_x, labels)
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("decimals", [None, 1], ids=["continuous", "tied"])
def test_metrics_of_model_outputs_match_sklearn(decimals):
    torch.manual_seed(0)
    backbone, method = small_backbone().eval(), gmchad()
    augment = BatchAugment(MEAN, STD)
    id_images, id_labels = random_batch(n_known=96, n_outliers=0, seed=1)
    ood_images, _ = random_batch(n_known=0, n_outliers=64, seed=2)
    with torch.no_grad():
        outputs = {
            name: method(backbone(augment(x, train=False))) for name, x in (("id", id_images), ("ood", ood_images))
        }
    if decimals is not None:
        outputs = {name: {k: v.round(decimals=decimals) for k, v in out.items()} for name, out in outputs.items()}

    scores = {name: method.scores(out) for name, out in outputs.items()}
    (row,) = evaluate(scores, "id", method.predict(outputs["id"]), id_labels, groups={})
    expected = sklearn_metrics(
        method.scores(outputs["id"])["distance"].numpy(), method.scores(outputs["ood"])["distance"].numpy()
    )
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, abs=1e-9), name
    assert ood_metrics(
        method.scores(outputs["id"])["distance"], method.scores(outputs["ood"])["distance"]
    ) == pytest.approx(expected, abs=1e-9)


def first_step_loss(module: OODModule, batch, precision: str) -> tuple[float, torch.dtype]:
    """Loss of one ``trainer.fit`` step of ``module`` on ``batch``, and the dtype the backbone computed in."""
    losses, dtypes = [], []

    class Capture(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    hook = module.backbone.register_forward_hook(lambda mod, args, out: dtypes.append(out.dtype))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Capture()],
    )
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))
    hook.remove()
    return losses[0], dtypes[0]


def test_bf16_autocast_training_step_on_cpu_is_close_to_fp32():
    torch.manual_seed(0)
    # no random crop or flip, so both runs see the same images
    module = OODModule(small_backbone(), gmchad(), BatchAugment(MEAN, STD, crop_padding=0, flip=False))
    batch = random_batch(n_known=16, n_outliers=16, seed=3)
    fp32_loss, fp32_dtype = first_step_loss(copy.deepcopy(module), batch, "32-true")
    bf16_loss, bf16_dtype = first_step_loss(copy.deepcopy(module), batch, "bf16-mixed")
    assert (fp32_dtype, bf16_dtype) == (torch.float32, torch.bfloat16)
    assert np.isfinite(bf16_loss)
    assert bf16_loss == pytest.approx(fp32_loss, rel=0.05, abs=0.05)


@pytest.mark.slow(
    reason="torch.compile (inductor, C++ code generation) of wrn-small takes ~60 s cold on 2 CPU cores, ~10 s with a warm cache"
)
@pytest.mark.parametrize("compile_mode", [True, "reduce-overhead"])
def test_compiled_backbone_gives_the_eager_outputs(compile_mode):
    """``reduce-overhead`` adds CUDA graphs on a GPU; on the CPU it must still compile and agree."""
    torch.manual_seed(0)
    backbone, method = small_backbone(), gmchad()
    eager = copy.deepcopy(backbone).eval()
    module = OODModule(backbone, method, BatchAugment(MEAN, STD), compile=compile_mode).eval()
    images, _ = random_batch(n_known=8, n_outliers=0, seed=4)
    x = module.augment(images, train=False)
    with torch.no_grad():
        compiled_out = module(x)["distances"]
        eager_out = method(eager(x))["distances"]
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-4, atol=1e-4)
