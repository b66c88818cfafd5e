"""Validation and test metrics of a Lightning run, from the scores its steps return.

:class:`~mchad.module.OODModule`'s validation and test steps return each batch's OOD scores (and,
on the ID set, predictions and labels). :class:`OODEvaluation` gathers them per data loader, on
the device, and at the end of the epoch

* validation: logs ``<score>/<metric>/val`` of the ID validation split against the OOD
  validation set, and the two score histograms to TensorBoard;
* test: turns every test set into result rows (:func:`~mchad.evaluation.evaluator.evaluate`),
  kept in :attr:`OODEvaluation.rows` for results.csv, and logs each (score, metric) averaged
  over the OOD sets, and ``Accuracy/test``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from mchad.evaluation.evaluator import Scores, evaluate
from mchad.evaluation.metrics import METRIC_NAMES, ood_metrics


def concat(batches: list[dict[str, Any]], key: str) -> Any:
    """One tensor (or one dict of tensors) per data loader from the per-batch step outputs."""
    first = batches[0][key]
    if isinstance(first, dict):
        return {name: torch.cat([batch[key][name] for batch in batches]) for name in first}
    return torch.cat([batch[key] for batch in batches])


class OODEvaluation(pl.Callback):
    """Collects the step outputs of validation and testing and turns them into metrics."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._batches: dict[int, list[dict[str, Any]]] = defaultdict(list)

    def _keep(self, outputs: dict[str, Any] | None, dataloader_idx: int) -> None:
        if outputs:
            self._batches[dataloader_idx].append(outputs)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches.clear()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep(outputs, dataloader_idx)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batches, self._batches = self._batches, defaultdict(list)
        if len(batches) < 2 or trainer.sanity_checking:
            return
        id_scores, ood_scores = (concat(batches[i], "scores") for i in (0, 1))
        for name in id_scores:
            for metric, value in ood_metrics(id_scores[name], ood_scores[name]).items():
                pl_module.log(f"{name}/{metric}/val", value, add_dataloader_idx=False)
            log_histograms(trainer, name, id_scores[name], ood_scores[name])

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches.clear()
        self.rows = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._keep(outputs, dataloader_idx)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batches, self._batches = self._batches, defaultdict(list)
        datamodule = trainer.datamodule
        names = datamodule.test_set_names
        scores: dict[str, Scores] = {names[i]: concat(chunks, "scores") for i, chunks in sorted(batches.items())}
        self.rows = evaluate(
            scores,
            id_name=names[0],
            id_predictions=concat(batches[0], "predictions"),
            id_labels=concat(batches[0], "labels"),
            groups=datamodule.test_set_groups,
        )
        log_test_means(pl_module, self.rows)


def log_histograms(trainer: pl.Trainer, score: str, id_scores: Tensor, ood_scores: Tensor) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_histogram(f"{score}/ID/val", id_scores.float(), trainer.current_epoch)
            logger.experiment.add_histogram(f"{score}/OOD/val", ood_scores.float(), trainer.current_epoch)


def log_test_means(pl_module: pl.LightningModule, rows: list[dict]) -> None:
    """Log each (score, metric) averaged over the OOD test sets, and the test accuracy."""
    if not rows:
        return
    pl_module.log("Accuracy/test", rows[0]["Accuracy"])
    by_score: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_score[row["score"]].append(row)
    for score, score_rows in by_score.items():
        for metric in METRIC_NAMES:
            pl_module.log(f"{score}/{metric}/test", sum(r[metric] for r in score_rows) / len(score_rows))
