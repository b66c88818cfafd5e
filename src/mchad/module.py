"""The one training loop shared by every method.

:class:`OODModule` owns the backbone ``f``, a :class:`~mchad.methods.method.Method`
and the batched on-device augmentation. A training step is

    x, y  --augment-->  x'  --f-->  z  --method-->  out  --method.loss-->  {term: L_term}
    L = sum_term L_term

and every term is logged as ``Loss/<term>/train``; the method's
:meth:`~mchad.methods.method.Method.diagnostics` (quantities that explain training, not part of
the loss) are logged as epoch means, ``Diagnostics/<name>/train``. Methods never see the loop:
they only map embeddings to outputs, losses, predictions and scores.

The optimizer and the learning-rate schedule are what ``model.optimizer`` and ``model.scheduler``
name (Hydra partials; the paper's Adam with a per-step cosine schedule by default).

A loss term that is NaN or infinite stops the run with :class:`~mchad.errors.TrainingDiverged`
naming the step and the term. The check reads nothing back per step (the first bad step
is recorded on the device): it is read every ``trainer.log_every_n_steps`` batches, at
the end of each epoch and before any checkpoint is written, so no checkpoint ever holds
a diverged model.

Every checkpoint carries the global random states (torch CPU and CUDA, NumPy, Python),
which dropout and user code draw from, and restores them on resume; the data path
draws from generators of its own (:mod:`mchad.data.augment`, :mod:`mchad.data.datamodule`).

Validation and test steps return the method's OOD scores (and, on the ID set, its predictions
and the labels) per batch; turning them into metrics is the evaluation layer's job
(:class:`mchad.evaluation.callback.OODEvaluation`), so this loop knows no metric but accuracy.
"""

from __future__ import annotations

import inspect
import random
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn
from torchmetrics import Metric

from mchad.errors import ConfigError, TrainingDiverged
from mchad.methods.method import Method, Outputs
from mchad.schema import COMPILE_MODES, STEP_COUNT_ARGUMENTS
from mchad.visualize import embedding_scatter, figure_to_array

Batch = tuple[Tensor, Tensor]

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]

PAPER_OPTIMIZER: OptimizerFactory = partial(torch.optim.Adam, lr=1e-3, weight_decay=5e-5)
PAPER_SCHEDULER: SchedulerFactory = partial(torch.optim.lr_scheduler.CosineAnnealingLR)
"""The paper's Adam and per-step cosine schedule (``config/model/optimizer/adam.yaml``, ``scheduler/cosine.yaml``)."""


def rng_states() -> dict[str, Any]:
    """The global random states, in types that ``torch.load(weights_only=True)`` reads back."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "rest": list(numpy_state[2:])},
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(("MT19937", states["numpy"]["keys"].numpy().astype(np.uint32), *states["numpy"]["rest"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def build_scheduler(factory: SchedulerFactory, optimizer: torch.optim.Optimizer, total_steps: int):
    """Call ``factory`` (a partial of a torch schedule) with the optimizer, and with the run's number of
    optimizer steps for a length argument (:data:`STEP_COUNT_ARGUMENTS`) the partial leaves out."""
    target = factory.func if isinstance(factory, partial) else factory
    bound = factory.keywords if isinstance(factory, partial) else {}
    parameters = inspect.signature(target).parameters
    length = {name: total_steps for name in STEP_COUNT_ARGUMENTS if name in parameters and name not in bound}
    return factory(optimizer, **length)


class KnownClassAccuracy(Metric):
    """``#{i : pred_i = y_i, y_i >= 0} / #{i : y_i >= 0}`` over every batch since the last reset.

    Outliers (label -1) do not count. ``update`` only adds on the device: torchmetrics'
    ``MeanMetric`` checks its input for NaN with ``if nans.any()``, a host
    synchronisation on every training step. The counts are summed over processes under DDP.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("known", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, labels: Tensor) -> None:
        known = labels >= 0
        self.correct += ((pred == labels) & known).sum()
        self.known += known.sum()

    def compute(self) -> Tensor:
        """The accuracy as float32; 0 before any sample with a known class."""
        return (self.correct / self.known.clamp(min=1)).float()


class OODModule(pl.LightningModule):
    """Backbone + method + augmentation, trained with the configured optimizer and schedule.

    Args:
        backbone: maps normalised images (B, 3, 32, 32) to embeddings (B, D).
        method: head, loss terms, prediction and OOD scores.
        augment: ``augment(x_uint8, train) -> float images``, run on the training device.
        optimizer: ``optimizer(parameters) -> torch.optim.Optimizer`` (``model.optimizer``, a Hydra
            partial; Adam with the paper's learning rate and weight decay by default).
        scheduler: ``scheduler(optimizer) -> LRScheduler`` stepped after every optimizer step
            (``model.scheduler``; see :func:`build_scheduler`), or None for a constant rate.
        channels_last: keep the backbone in channels-last memory format.
        compile: compile the backbone's forward with ``torch.compile``: False, True (mode
            ``default``) or a mode name; ``reduce-overhead`` replays the compiled steps as
            CUDA graphs on a GPU, which pays when a step is short enough for kernel launches
            to matter (small backbones, small batches).
        embedding_plots: with a 2-D embedding, draw the validation embeddings every epoch
            (TensorBoard image and ``<run_dir>/embeddings/epoch_NNN.png``, frames of the GIF
            that ``mchad-report --gif`` makes).
        projector: after testing, put the ID test embeddings and a sample of every OOD set
            into TensorBoard's embedding projector.
        architecture: what the weights fit (backbone config, method, sizes), kept in the
            checkpoint so that loading it into another model can say expected vs found.
    """

    def __init__(
        self,
        backbone: nn.Module,
        method: Method,
        augment: nn.Module,
        optimizer: OptimizerFactory = PAPER_OPTIMIZER,
        scheduler: SchedulerFactory | None = PAPER_SCHEDULER,
        channels_last: bool = True,
        compile: bool | str = False,
        embedding_plots: bool = False,
        projector: bool = False,
        projector_samples: int = 1000,
        architecture: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "method", "augment", "optimizer", "scheduler"])
        self.backbone = backbone
        self.method = method
        self.augment = augment
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile:
            mode = "default" if compile is True else str(compile)
            if mode not in COMPILE_MODES:
                raise ConfigError(
                    f"model.compile={compile} is unknown: use false, true or one of {', '.join(COMPILE_MODES)}"
                )
            self.backbone.compile(mode=mode)
        self.train_accuracy = KnownClassAccuracy()
        self.val_accuracy = KnownClassAccuracy()
        self._embeddings: dict[int, list[tuple[Tensor, Tensor]]] = defaultdict(list)
        # (step, term index, value) of the first non-finite loss term; step -1 = none yet
        self._nonfinite: Tensor | None = None
        self._term_names: list[str] = []
        #: post-hoc detectors scored in the same test pass, the forward-only ones from the same forward
        #: (:class:`mchad.evaluation.detectors.DetectorBank`, set by the run for testing); None = none
        self.detectors: Any = None

    def forward(self, x: Tensor) -> Outputs:
        return self.method(self.backbone(x))

    def _step_loss(self, out: Outputs, y: Tensor, stage: str) -> Tensor:
        terms = self.method.loss(out, y)
        values = torch.stack(list(terms.values()))
        total = values.sum()
        if stage == "train":
            self._term_names = list(terms)
            self._record_nonfinite(values.detach())
        for name, value in terms.items():
            self.log(f"Loss/{name}/{stage}", value, on_step=stage == "train", on_epoch=True, add_dataloader_idx=False)
        # Lightning turns per-step progress-bar values into numbers after every batch (a host sync per
        # step on a GPU), so the bar gets the epoch means only
        self.log(
            f"Loss/total/{stage}",
            total,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=stage != "train",
            add_dataloader_idx=False,
        )
        return total

    def _record_nonfinite(self, values: Tensor) -> None:
        """Remember the first step with a NaN / infinite term, on the device (no host sync)."""
        if self._nonfinite is None:
            self._nonfinite = torch.full((3,), -1.0, dtype=torch.float64, device=values.device)
        bad = ~torch.isfinite(values)
        term = bad.int().argmax()
        found = torch.stack(
            [
                torch.full((), self.global_step, dtype=torch.float64, device=values.device),
                term.double(),
                values.gather(0, term.view(1))[0].double(),
            ]
        )
        self._nonfinite = torch.where(bad.any() & (self._nonfinite[0] < 0), found, self._nonfinite)

    def check_finite(self) -> None:
        """Raise :class:`TrainingDiverged` if a loss term was ever NaN or infinite (one host read)."""
        if self._nonfinite is None:
            return
        step, term, value = self._nonfinite.tolist()
        if step >= 0:
            name = self._term_names[int(term)]
            raise TrainingDiverged(
                f"the loss term '{name}' became {value} at training step {int(step)}: the run diverged; "
                f"lower the learning rate (model.optimizer.lr) or check the data, then start again "
                "(the checkpoints written before that step are kept)"
            )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch
        out = self(self.augment(x, train=True, key=(self.current_epoch, batch_idx)))
        loss = self._step_loss(out, y, "train")
        for name, value in self.method.diagnostics(out, y).items():
            self.log(f"Diagnostics/{name}/train", value, on_step=False, on_epoch=True)
        self.train_accuracy.update(self.method.predict(out), y)
        self.log("Accuracy/train", self.train_accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_train_epoch_start(self) -> None:
        self.method.on_train_epoch_start()

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        if (batch_idx + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            self.check_finite()

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        self.method.on_train_epoch_end()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])

    def _keep_embeddings(self, dataloader_idx: int, z: Tensor, y: Tensor) -> None:
        self._embeddings[dataloader_idx].append((z.detach(), y))

    def _embeddings_of(self, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        chunks = self._embeddings[dataloader_idx]
        return torch.cat([z for z, _ in chunks]), torch.cat([y for _, y in chunks])

    def _scores_of_batch(self, out: Outputs, y: Tensor, dataloader_idx: int) -> dict[str, Any]:
        """What the evaluation layer needs of a batch: OOD scores; on the ID set also predictions and labels."""
        step = {"scores": {k: v.detach() for k, v in self.method.scores(out).items()}}
        if dataloader_idx == 0:
            step |= {"predictions": self.method.predict(out).detach(), "labels": y}
        return step

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        x, y = batch
        z = self.backbone(self.augment(x, train=False))
        out = self.method(z)
        if self.hparams.embedding_plots and z.shape[1] == 2:
            self._keep_embeddings(dataloader_idx, z, y)
        if dataloader_idx == 0:
            self._step_loss(out, y, "val")
            self.val_accuracy.update(self.method.predict(out), y)
            self.log("Accuracy/val", self.val_accuracy, on_epoch=True, prog_bar=True, add_dataloader_idx=False)
        return self._scores_of_batch(out, y, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        if self._embeddings and not self.trainer.sanity_checking:
            self._plot_embeddings()
        self._embeddings.clear()

    def _plot_embeddings(self) -> None:
        """Scatter of the 2-D validation embeddings: a TensorBoard image and a PNG frame per epoch."""
        (id_z, id_y), (ood_z, _) = (self._embeddings_of(i) for i in (0, 1))
        self._embeddings.clear()
        figure = embedding_scatter(id_z, id_y, ood_z, self.method.class_centers(), f"epoch {self.current_epoch}")
        frames = Path(self.trainer.default_root_dir) / "embeddings"
        frames.mkdir(parents=True, exist_ok=True)
        figure.savefig(frames / f"epoch_{self.current_epoch:03d}.png")
        for writer in self._tensorboards():
            writer.add_image("embeddings/val", figure_to_array(figure), self.current_epoch, dataformats="HWC")

    def _tensorboards(self) -> list:
        return [logger.experiment for logger in self.loggers if isinstance(logger, TensorBoardLogger)]

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        x, y = batch
        x = self.augment(x, train=False)
        if self.detectors is None:
            z, detector_scores = self.backbone(x), {}
        else:
            z, detector_scores = self.detectors.score_batch(self.backbone, self.method, x)
        if self.hparams.projector:
            self._keep_embeddings(dataloader_idx, z, y)
        step = self._scores_of_batch(self.method(z), y, dataloader_idx)
        step["scores"] |= detector_scores  # no name clash: check_detectors leaves out the method's own scores
        return step

    def on_test_epoch_end(self) -> None:
        if self._embeddings:
            self._log_projector(self.trainer.datamodule.test_set_names)

    def _log_projector(self, set_names: list[str]) -> None:
        """ID test embeddings (labelled by class) and a sample of each OOD set (labelled by set name)."""
        generator = torch.Generator().manual_seed(0)
        points, labels = [], []
        for index, name in enumerate(set_names):
            z, y = self._embeddings_of(index)
            keep = torch.randperm(len(z), generator=generator)[: self.hparams.projector_samples]
            points.append(z[keep.to(z.device)].float().cpu())
            labels += [str(int(c)) for c in y[keep.to(y.device)].cpu()] if index == 0 else [name] * len(keep)
        self._embeddings.clear()
        for writer in self._tensorboards():
            writer.add_embedding(torch.cat(points), metadata=labels, tag="test", global_step=self.current_epoch)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = build_scheduler(self.scheduler_factory, optimizer, total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
