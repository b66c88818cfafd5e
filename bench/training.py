"""Timed training: our run in the Lightning Trainer, and plain PyTorch loops over either data path."""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from bench import reference
from bench.options import Options
from bench.timing import ClockCallback, StepClock
from bench.workload import DataPaths, build_seeded_run, describe, load, trainer_for
from mchad.methods import build_method
from mchad.methods.method import Method
from mchad.train import resolve_precision


def images_per_step(cfg: DictConfig) -> int:
    return cfg.data.batch_size + cfg.data.outliers.batch_size


def training_config(cfg: DictConfig, paths: DataPaths, options: Options) -> dict:
    """What the JSON records of a training benchmark's set-up (shared by (a) and (b))."""
    return {
        **describe(cfg, paths),
        "images_per_step": images_per_step(cfg),
        "warmup_steps": options.warmup_steps,
        "timed_steps": options.timed_steps,
    }


def steps(options: Options) -> int:
    return options.warmup_steps + options.timed_steps


def autocast_dtype(cfg: DictConfig) -> torch.dtype | None:
    """The autocast dtype our Trainer uses (``precision: auto`` = bf16 on a GPU), for plain loops that match it."""
    return torch.bfloat16 if resolve_precision(cfg.trainer).startswith("bf16") else None


def lightning_rate(options: Options, cfg: DictConfig, run_dir) -> float:
    """Images/s of ``trainer.fit`` on the data module + OODModule, after the warm-up steps."""
    run = build_seeded_run(cfg, run_dir)
    clock = StepClock(options.torch_device)
    trainer_for(cfg, run_dir, ClockCallback(clock)).fit(run.module, datamodule=run.datamodule)
    return clock.rate(options.warmup_steps, images_per_step(cfg))


def our_data_plain_loop_rate(options: Options, cfg: DictConfig, run_dir) -> float:
    """Images/s of a bare PyTorch loop over our data path: data module batches, BatchAugment, channels_last."""
    run = build_seeded_run(cfg, run_dir)
    device = options.torch_device
    module = run.module.to(device)
    clock = StepClock(device)
    reference.train_steps(
        module.backbone,
        module.method,
        run.datamodule.train_dataloader(),
        steps(options),
        device,
        clock,
        cfg.model.optimizer.lr,
        cfg.model.optimizer.weight_decay,
        prepare=lambda x: module.augment(x, train=True),
        autocast_dtype=autocast_dtype(cfg),
    )
    return clock.rate(options.warmup_steps, images_per_step(cfg))


def reference_model(cfg: DictConfig, device: torch.device) -> tuple[nn.Module, Method]:
    """The run's backbone and method with ours' initial weights, in the reference's NCHW-contiguous layout."""
    pl.seed_everything(cfg.seed, verbose=False)
    # mchad.train.build_run's order of random draws: the method first, then the backbone
    _, method = build_method(cfg.method)
    backbone = instantiate(cfg.model.backbone)
    return backbone.to(device), method.to(device)


def contiguous_copy(backbone: nn.Module) -> nn.Module:
    """A copy of ``backbone`` with NCHW-contiguous weights (the reference layout)."""
    return copy.deepcopy(backbone).to(memory_format=torch.contiguous_format)


def split_workers(total: int, id_batch: int, outlier_batch: int) -> tuple[int, int]:
    """Worker processes for the ID and the outlier loader, in proportion to their batch sizes, at least one each."""
    id_workers = max(1, round(total * id_batch / (id_batch + outlier_batch)))
    return id_workers, max(1, total - id_workers)


class ReferenceTraining:
    """The reference pipeline's training data (PIL data sets, built once) and its timed plain loop."""

    def __init__(self, options: Options, cfg: DictConfig, paths: DataPaths) -> None:
        transform = reference.train_transform(cfg.data.mean, cfg.data.std, cfg.data.crop_padding)
        self.id_set = reference.PILImages(load("cifar10", "train", paths.cifar10), transform)
        self.outlier_set = reference.PILImages(load("tinyimages300k", "train", paths.outliers).as_ood(), transform)
        self.options = options
        self.cfg = cfg

    def batches(self):
        """Shuffled ``(x, y)`` training batches, ID then outliers, from fresh DataLoaders."""
        cfg = self.cfg
        id_workers, outlier_workers = split_workers(
            self.options.workers, cfg.data.batch_size, cfg.data.outliers.batch_size
        )
        return reference.train_batches(
            reference.loader(self.id_set, cfg.data.batch_size, id_workers, shuffle=True),
            reference.loader(self.outlier_set, cfg.data.outliers.batch_size, outlier_workers, shuffle=True),
        )

    def rate(self) -> float:
        """Images/s of the plain fp32 loop over :meth:`batches`, a fresh seeded model each call."""
        options, cfg = self.options, self.cfg
        device = options.torch_device
        backbone, method = reference_model(cfg, device)
        clock = StepClock(device)
        batches = self.batches()
        reference.train_steps(
            backbone,
            method,
            batches,
            steps(options),
            device,
            clock,
            cfg.model.optimizer.lr,
            cfg.model.optimizer.weight_decay,
        )
        batches.close()
        return clock.rate(options.warmup_steps, images_per_step(cfg))
