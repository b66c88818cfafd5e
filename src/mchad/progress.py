"""A Rich progress bar that does not make a GPU training step wait for the host.

Lightning turns every value logged with ``prog_bar=True`` on a step into a Python
number after every batch (``.item()``), and its bars read the metrics after every
batch: on a GPU a host synchronisation per step, so the CPU cannot queue the next
step while the GPU runs this one. :class:`~mchad.methods.base.OODModule` therefore
logs no per-step value to the bar, and this bar shows the training loss
(``Loss/total/train``) itself, read every ``trainer.log_every_n_steps`` batches (when
the loggers read it anyway) and at the end of each epoch.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar

TRAIN_LOSS = "Loss/total/train_step"
"""The per-step training loss as Lightning names it in ``trainer.callback_metrics``."""


class ProgressBar(RichProgressBar):
    """``RichProgressBar`` that reads metrics every ``trainer.log_every_n_steps`` batches and shows ``loss``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._metrics_due = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._metrics_due = (batch_idx + 1) % max(1, trainer.log_every_n_steps) == 0
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._metrics_due = True

    def _update_metrics(self, trainer, pl_module) -> None:
        if self._metrics_due:
            super()._update_metrics(trainer, pl_module)

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get(TRAIN_LOSS)
        if loss is not None:
            items["loss"] = float(loss)
        return items
