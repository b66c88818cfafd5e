"""Loggers that a resumed run continues instead of restarting.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts, so a run resumed
from its checkpoint would lose the rows of the epochs before the kill. :class:`CSVLogger`
appends to the file instead, keeping its columns (TensorBoard needs nothing: a resumed
run writes a new event file beside the old ones, with the step counts from the checkpoint).
"""

from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import csv_logs


class AppendingExperimentWriter(csv_logs.ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and its header; new columns rewrite the header, as Lightning does."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class CSVLogger(csv_logs.CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to the run's ``metrics.csv`` on resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
