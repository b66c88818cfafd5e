"""The one training / evaluation loop shared by every method.

:class:`OODModule` owns the backbone ``f``, a :class:`~mchad.methods.method.Method`
and the batched on-device augmentation. A training step is

    x, y  --augment-->  x'  --f-->  z  --method-->  out  --method.loss-->  {term: L_term}
    L = sum_term L_term

and every term is logged as ``Loss/<term>/train``. Methods never see the loop:
they only map embeddings to outputs, losses, predictions and scores.

Validation runs on the ID validation split and one OOD validation set and logs
``Accuracy/val``, ``Loss/<term>/val`` and ``<score>/<metric>/val``. Testing
passes every image of the ID test set and of each OOD test set through the
network once, keeps the method's outputs on the device, and turns them into one
result row per (OOD set, score) with :func:`mchad.evaluation.evaluator.evaluate`.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn
from torchmetrics import MeanMetric

from mchad.evaluation.evaluator import evaluate
from mchad.evaluation.metrics import METRIC_NAMES, ood_metrics
from mchad.methods.method import Method, Outputs

log = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor]


def concat_outputs(chunks: list[Outputs]) -> Outputs:
    """Concatenate per-batch output dicts along the batch dimension."""
    return {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}


class OODModule(pl.LightningModule):
    """Backbone + method + augmentation, trained with Adam and a per-batch cosine schedule.

    Args:
        backbone: maps normalised images (B, 3, 32, 32) to embeddings (B, D).
        method: head, loss terms, prediction and OOD scores.
        augment: ``augment(x_uint8, train) -> float images``, run on the training device.
        lr: Adam learning rate.
        weight_decay: Adam weight decay (L2, as in the reference code).
        channels_last: keep the backbone in channels-last memory format.
        compile: compile the backbone's forward with ``torch.compile``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        method: Method,
        augment: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 5e-5,
        channels_last: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "method", "augment"])
        self.backbone = backbone
        self.method = method
        self.augment = augment
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile:
            self.backbone.compile()
        self.train_accuracy = MeanMetric()
        self.val_accuracy = MeanMetric()
        self._val_scores: dict[int, list[dict[str, Tensor]]] = defaultdict(list)
        self._test_outputs: dict[int, list[Outputs]] = defaultdict(list)
        self._test_labels: list[Tensor] = []
        self.test_rows: list[dict] = []

    def forward(self, x: Tensor) -> Outputs:
        return self.method(self.backbone(x))

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        x, y = batch
        training = self._trainer is not None and self.trainer.training
        return self.augment(x, train=training), y

    def _step_loss(self, out: Outputs, y: Tensor, stage: str) -> Tensor:
        terms = self.method.loss(out, y)
        total = torch.stack(list(terms.values())).sum()
        for name, value in terms.items():
            self.log(f"Loss/{name}/{stage}", value, on_step=stage == "train", on_epoch=True, add_dataloader_idx=False)
        self.log(f"Loss/total/{stage}", total, on_step=stage == "train", on_epoch=True, prog_bar=True,
                 add_dataloader_idx=False)
        return total

    def _update_accuracy(self, metric: MeanMetric, out: Outputs, y: Tensor) -> None:
        # weights instead of boolean indexing: no host synchronisation inside the step
        correct = (self.method.predict(out) == y).float()
        metric.update(correct, weight=(y >= 0).float())

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch
        out = self(x)
        loss = self._step_loss(out, y, "train")
        self._update_accuracy(self.train_accuracy, out, y)
        self.log("Accuracy/train", self.train_accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_train_epoch_start(self) -> None:
        self.method.on_train_epoch_start()

    def on_train_epoch_end(self) -> None:
        self.method.on_train_epoch_end()

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        out = self(x)
        if dataloader_idx == 0:
            self._step_loss(out, y, "val")
            self._update_accuracy(self.val_accuracy, out, y)
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

    def _log_histograms(self, score: str, id_scores: Tensor, ood_scores: Tensor) -> None:
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                writer = logger.experiment
                writer.add_histogram(f"{score}/ID/val", id_scores.float(), self.current_epoch)
                writer.add_histogram(f"{score}/OOD/val", ood_scores.float(), self.current_epoch)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        self._test_outputs[dataloader_idx].append({k: v.detach() for k, v in self(x).items()})
        if dataloader_idx == 0:
            self._test_labels.append(y)

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
