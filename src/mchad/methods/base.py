"""The one training / evaluation loop shared by every method.

:class:`OODModule` owns the backbone ``f``, a :class:`~mchad.methods.method.Method`
and the batched on-device augmentation. A training step is

    x, y  --augment-->  x'  --f-->  z  --method-->  out  --method.loss-->  {term: L_term}
    L = sum_term L_term

and every term is logged as ``Loss/<term>/train``. Methods never see the loop:
they only map embeddings to outputs, losses, predictions and scores.

A loss term that is NaN or infinite stops the run with :class:`~mchad.errors.TrainingDiverged`
naming the step and the term. The check reads nothing back per step (the first bad step
is recorded on the device): it is read every ``trainer.log_every_n_steps`` batches, at
the end of each epoch and before any checkpoint is written, so no checkpoint ever holds
a diverged model.

Every checkpoint carries the global random states (torch CPU and CUDA, NumPy, Python),
which dropout and user code draw from, and restores them on resume; the data path
draws from generators of its own (:mod:`mchad.data.augment`, :mod:`mchad.data.datamodule`).

Validation runs on the ID validation split and one OOD validation set and logs
``Accuracy/val``, ``Loss/<term>/val`` and ``<score>/<metric>/val``. Testing
passes every image of the ID test set and of each OOD test set through the
network once, keeps the method's outputs on the device, and turns them into one
result row per (OOD set, score) with :func:`mchad.evaluation.evaluator.evaluate`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

from mchad.errors import ConfigError, TrainingDiverged
from mchad.evaluation.evaluator import evaluate
from mchad.evaluation.metrics import METRIC_NAMES, ood_metrics
from mchad.evaluation.running_accuracy import KnownClassAccuracy
from mchad.methods.method import Method, Outputs
from mchad.visualize import embedding_scatter, figure_to_array


Batch = tuple[Tensor, Tensor]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes that ``model.compile`` accepts besides true and false."""


def concat_outputs(chunks: list[Outputs]) -> Outputs:
    """Concatenate per-batch output dicts along the batch dimension."""
    return {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}


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


class OODModule(pl.LightningModule):
    """Backbone + method + augmentation, trained with Adam and a per-batch cosine schedule.

    Args:
        backbone: maps normalised images (B, 3, 32, 32) to embeddings (B, D).
        method: head, loss terms, prediction and OOD scores.
        augment: ``augment(x_uint8, train) -> float images``, run on the training device.
        lr: Adam learning rate.
        weight_decay: Adam weight decay (L2, as in the reference code).
        channels_last: keep the backbone in channels-last memory format.
        compile: compile the backbone's forward with ``torch.compile``: False, True (mode
            ``default``) or a mode name; ``reduce-overhead`` replays the compiled steps as
            CUDA graphs on a GPU, which pays when a step is short enough for kernel launches
            to matter (small backbones, small batches).
        embedding_plots: with a 2-D embedding, draw the validation embeddings every epoch
            (TensorBoard image and ``<run_dir>/embeddings/epoch_NNN.png``, frames of the GIF
            that ``python -m mchad.report --gif`` makes).
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
        lr: float = 1e-3,
        weight_decay: float = 5e-5,
        channels_last: bool = True,
        compile: bool | str = False,
        embedding_plots: bool = False,
        projector: bool = False,
        projector_samples: int = 1000,
        architecture: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "method", "augment"])
        self.backbone = backbone
        self.method = method
        self.augment = augment
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile:
            mode = "default" if compile is True else str(compile)
            if mode not in COMPILE_MODES:
                raise ConfigError(f"model.compile={compile} is unknown: use false, true or one of {', '.join(COMPILE_MODES)}")
            self.backbone.compile(mode=mode)
        self.train_accuracy = KnownClassAccuracy()
        self.val_accuracy = KnownClassAccuracy()
        self._val_scores: dict[int, list[dict[str, Tensor]]] = defaultdict(list)
        self._embeddings: dict[int, list[tuple[Tensor, Tensor]]] = defaultdict(list)
        self._test_outputs: dict[int, list[Outputs]] = defaultdict(list)
        self._test_labels: list[Tensor] = []
        self.test_rows: list[dict] = []
        # (step, term index, value) of the first non-finite loss term; step -1 = none yet
        self._nonfinite: Tensor | None = None
        self._term_names: list[str] = []

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
        # Lightning turns per-step progress-bar values into numbers after every batch (a host sync);
        # mchad.progress.ProgressBar shows the training loss every log_every_n_steps instead
        self.log(f"Loss/total/{stage}", total, on_step=stage == "train", on_epoch=True, prog_bar=stage != "train",
                 add_dataloader_idx=False)
        return total

    def _record_nonfinite(self, values: Tensor) -> None:
        """Remember the first step with a NaN / infinite term, on the device (no host sync)."""
        if self._nonfinite is None:
            self._nonfinite = torch.full((3,), -1.0, dtype=torch.float64, device=values.device)
        bad = ~torch.isfinite(values)
        term = bad.int().argmax()
        found = torch.stack([torch.full((), self.global_step, dtype=torch.float64, device=values.device),
                             term.double(), values.gather(0, term.view(1))[0].double()])
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
                f"lower model.lr (now {self.hparams.lr}) or check the data, then start again "
                "(the checkpoints written before that step are kept)"
            )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch
        out = self(self.augment(x, train=True, key=(self.current_epoch, batch_idx)))
        loss = self._step_loss(out, y, "train")
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

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        z = self.backbone(self.augment(x, train=False))
        out = self.method(z)
        if self.hparams.embedding_plots and z.shape[1] == 2:
            self._keep_embeddings(dataloader_idx, z, y)
        if dataloader_idx == 0:
            self._step_loss(out, y, "val")
            self.val_accuracy.update(self.method.predict(out), y)
            self.log("Accuracy/val", self.val_accuracy, on_epoch=True, prog_bar=True, add_dataloader_idx=False)
        self._val_scores[dataloader_idx].append({k: v.detach() for k, v in self.method.scores(out).items()})

    def on_validation_epoch_end(self) -> None:
        if len(self._val_scores) < 2 or self.trainer.sanity_checking:
            self._val_scores.clear()
            return
        id_scores, ood_scores = (concat_outputs(self._val_scores[i]) for i in (0, 1))
        self._val_scores.clear()
        for name in id_scores:
            metrics = ood_metrics(id_scores[name], ood_scores[name])
            for metric, value in metrics.items():
                self.log(f"{name}/{metric}/val", value, add_dataloader_idx=False)
            self._log_histograms(name, id_scores[name], ood_scores[name])
        if self._embeddings:
            self._plot_embeddings()

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

    def _log_histograms(self, score: str, id_scores: Tensor, ood_scores: Tensor) -> None:
        for writer in self._tensorboards():
            writer.add_histogram(f"{score}/ID/val", id_scores.float(), self.current_epoch)
            writer.add_histogram(f"{score}/OOD/val", ood_scores.float(), self.current_epoch)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        z = self.backbone(self.augment(x, train=False))
        self._test_outputs[dataloader_idx].append({k: v.detach() for k, v in self.method(z).items()})
        if dataloader_idx == 0:
            self._test_labels.append(y)
        if self.hparams.projector:
            self._keep_embeddings(dataloader_idx, z, y)

    def on_test_epoch_end(self) -> None:
        datamodule = self.trainer.datamodule
        names = datamodule.test_set_names
        outputs = {names[i]: concat_outputs(chunks) for i, chunks in sorted(self._test_outputs.items())}
        self.test_rows = evaluate(
            self.method,
            outputs,
            id_labels=torch.cat(self._test_labels),
            id_name=names[0],
            groups=datamodule.test_set_groups,
        )
        self._test_outputs.clear()
        self._test_labels.clear()
        self._log_test_means()
        if self._embeddings:
            self._log_projector(names)

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

    def _log_test_means(self) -> None:
        """Log each (score, metric) averaged over the OOD test sets, and the test accuracy."""
        if not self.test_rows:
            return
        self.log("Accuracy/test", self.test_rows[0]["Accuracy"])
        by_score: dict[str, list[dict]] = defaultdict(list)
        for row in self.test_rows:
            by_score[row["score"]].append(row)
        for score, rows in by_score.items():
            for metric in METRIC_NAMES:
                self.log(f"{score}/{metric}/test", sum(r[metric] for r in rows) / len(rows))

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, int(self.trainer.estimated_stepping_batches))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
