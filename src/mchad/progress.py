"""Training progress: Lightning's rich bar in a terminal, plain lines when the output goes to a file.

A rich bar redraws one line in place; written to a file (SLURM, ``nohup``, ``> log``) it prints
nothing until the run ends. :class:`LogProgress` writes instead one line per epoch

    epoch 3/10 · step 1176 · loss 0.412 · val acc 0.910 · 1,850 img/s · eta 4m

and, within an epoch that lasts long, one line at most every ``interval_s`` seconds; testing
writes one line per test set (a CIFAR evaluation on a CPU runs for minutes)

    test 3/8 · svhn · 10,000 images · 41s · 244 img/s

The lines go to the ``mchad.progress`` logger, which Hydra sends to the console and to the run's
log file.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar

log = logging.getLogger(__name__)

LOSS_KEY = "Loss/total/train"
ACCURACY_KEY = "Accuracy/val"


def progress_bar(refresh_rate: int = 1, interval_s: float = 180.0) -> ProgressBar:
    """A :class:`RichProgressBar` when standard output is a terminal, else :class:`LogProgress`."""
    if sys.stdout.isatty():
        return RichProgressBar(refresh_rate=refresh_rate)
    return LogProgress(interval_s=interval_s)


def duration(seconds: float) -> str:
    """``42s``, ``4m``, ``2h05m``: the precision a waiting person needs."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours}h{minutes:02d}m"


def images_in(batch: Any) -> int:
    """The number of images of a batch: an ``(images, labels)`` pair or the images alone."""
    return len(batch[0] if isinstance(batch, (list, tuple)) else batch)


class LogProgress(ProgressBar):
    """One line per training epoch and per test set, and at most one every ``interval_s`` seconds within them.

    Lightning's own progress bars draw in place (TQDM with carriage returns, rich with a live
    display), which a file cannot show; this bar only logs lines.

    Args:
        interval_s: the least time between two lines inside an epoch (the epoch's own line is
            always written).
    """

    def __init__(self, interval_s: float = 180.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._enabled = True
        self._fit_started = self._epoch_started = self._last_batch_end = self._last_line = 0.0
        self._first_step = 0
        self._images = 0
        self._test_started = 0.0
        self._test_images = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_started = time.monotonic()
        self._first_step = trainer.global_step  # a resumed run: the steps before it took no time here

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = self._last_batch_end = self._last_line = time.monotonic()
        self._images = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += images_in(batch)
        now = self._last_batch_end = time.monotonic()
        if self._enabled and now - self._last_line >= self.interval_s:
            self._last_line = now
            batches = self.total_train_batches
            of = f"/{batches}" if isinstance(batches, int) else ""
            log.info(self._line(trainer, [f"batch {batch_idx + 1}{of}"]))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._enabled:
            return
        metrics = trainer.callback_metrics
        parts = []
        loss = metrics.get(f"{LOSS_KEY}_epoch", metrics.get(LOSS_KEY))
        if loss is not None:
            parts.append(f"loss {float(loss):.3f}")
        if ACCURACY_KEY in metrics:
            parts.append(f"val acc {float(metrics[ACCURACY_KEY]):.3f}")
        log.info(self._line(trainer, parts))

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0:
            self._test_started = self._last_line = time.monotonic()
            self._test_images = 0

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._test_images += images_in(batch)
        now = time.monotonic()
        batches = trainer.num_test_batches[dataloader_idx]
        last = batch_idx + 1 == batches
        if not self._enabled or not (last or now - self._last_line >= self.interval_s):
            return
        self._last_line = now
        names = getattr(trainer.datamodule, "test_set_names", None)  # mchad's data module names its test sets
        name = names[dataloader_idx] if names and dataloader_idx < len(names) else f"set {dataloader_idx + 1}"
        seconds = now - self._test_started
        done = [f"{self._test_images:,} images", duration(seconds)] if last else [f"batch {batch_idx + 1}/{batches}"]
        rate = f"{self._test_images / max(seconds, 1e-9):,.0f} img/s"
        log.info(" · ".join([f"test {dataloader_idx + 1}/{len(trainer.test_dataloaders)}", name, *done, rate]))

    def _line(self, trainer: pl.Trainer, parts: list[str]) -> str:
        now = time.monotonic()
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        head = [f"epoch {trainer.current_epoch + 1}{f'/{epochs}' if epochs else ''}", f"step {trainer.global_step}"]
        # training images per second, the validation that ends an epoch not counted
        rate = self._images / max(self._last_batch_end - self._epoch_started, 1e-9)
        tail = [f"{rate:,.0f} img/s"]
        steps_done, total = trainer.global_step - self._first_step, trainer.estimated_stepping_batches
        if steps_done > 0 and math.isfinite(total):
            remaining = (now - self._fit_started) / steps_done * max(total - trainer.global_step, 0)
            tail.append(f"eta {duration(remaining)}")
        return " · ".join([*head, *parts, *tail])
