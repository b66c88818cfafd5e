"""Loggers that a resumed run continues instead of restarting, the optional trackers, and what a run tells them.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts, so a run resumed
from its checkpoint would lose the rows of the epochs before the kill. :class:`CSVLogger`
appends to the file instead, keeping its columns (TensorBoard needs nothing: a resumed
run writes a new event file beside the old ones, with the step counts from the checkpoint).

The trackers (``logger=mlflow``, ``logger=wandb``, docs/trackers.md) are Lightning's own
loggers, made fit for run directories: :class:`MLFlowLogger` (a local file store without
SQLAlchemy, one experiment shared by concurrent sweep jobs) and :class:`WandbLogger` each
continue the tracker run of a resumed run directory. Lightning logs the per-epoch metrics;
:func:`log_config` gives them the resolved config when the loggers are made, and
:func:`log_results` the final results table and the tested checkpoint after ``results.csv``
is written. Their packages are optional extras: :func:`check_packages` turns a missing one
into a one-line error before anything runs; importing this module needs neither.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import csv_logs
from pytorch_lightning.loggers import mlflow as lightning_mlflow
from pytorch_lightning.loggers import wandb as lightning_wandb
from pytorch_lightning.utilities import rank_zero_only

from mchad.errors import ConfigError

log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------------------------
# optional trackers

EXTRAS = {"MLFlowLogger": ("mlflow", "mlflow"), "WandbLogger": ("wandb", "wandb")}
"""Logger class name -> (the module it needs, the extra of this package that installs it)."""

MLFLOW_RUN_ID_FILE = ".mlflow_run_id"
"""In the run directory: the MLflow run a resumed run continues."""

RESULT_METRICS = ("AUROC", "AUPR-IN", "AUPR-OUT", "FPR95")


def check_packages(loggers: dict[str, Any] | None) -> None:
    """Raise a one-line ConfigError for a configured tracker whose package is not installed."""
    for key, node in (loggers or {}).items():
        target = str((node or {}).get("_target_", "")) if isinstance(node, dict) else ""
        module, extra = EXTRAS.get(target.rpartition(".")[2], (None, None))
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"logger.{key} ({target}) needs the {module} package, which is not installed: "
                f"pip install 'mchad[{extra}]' (or leave it out: logger=default)"
            )


def tracker_run_name(run_dir: str | Path) -> str:
    """A tracker run's name: the run directory's (``seed=3,...`` in a sweep, the start time of a single run)."""
    return Path(run_dir).name


def is_local_store(uri: str | None) -> bool:
    """Whether an MLflow tracking URI is a folder (``file:...`` or a plain path), MLflow's file store."""
    return not uri or uri.startswith("file:") or ("://" not in uri and not uri.startswith(("databricks", "sqlite")))


class MLFlowLogger(lightning_mlflow.MLFlowLogger):
    """``pytorch_lightning.loggers.MLFlowLogger`` for a run directory.

    * A local folder as tracking URI (the default, ``file:<log_dir>/mlruns``) is MLflow's file
      store, which MLflow 3 refuses unless ``MLFLOW_ALLOW_FILE_STORE=true``: this logger sets it.
      The file store needs no SQLAlchemy (mlflow-skinny) and no server, and concurrent sweep
      jobs write their runs side by side.
    * Sweep jobs that start together create the experiment once (the loser of the race takes
      the winner's).
    * The MLflow run id is kept in ``<run_dir>/.mlflow_run_id``: a resumed run (killed, requeued)
      continues its MLflow run instead of starting a second one.
    """

    def __init__(self, run_dir: str | Path, run_name: str | None = None, tags: dict | None = None, **kwargs: Any):
        self.run_dir = Path(run_dir)
        if is_local_store(kwargs.get("tracking_uri")):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        id_file = self.run_dir / MLFLOW_RUN_ID_FILE
        if kwargs.get("run_id") is None and id_file.is_file():
            kwargs["run_id"] = id_file.read_text().strip() or None
        tags = {"run_dir": str(self.run_dir.absolute()), **(tags or {})}
        super().__init__(run_name=run_name or tracker_run_name(self.run_dir), tags=tags, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._initialized:
            return self._mlflow_client
        from mlflow.exceptions import MlflowException

        resumed = self._run_id is not None
        if resumed:
            try:
                self._mlflow_client.get_run(self._run_id)
            except MlflowException:
                log.warning("MLflow run %s of %s is not in %s: starting a new one", self._run_id, self.run_dir,
                            self._tracking_uri)  # fmt: skip
                self._run_id, resumed = None, False
        if not resumed and self._experiment_id is None:
            self._experiment_id = self._shared_experiment()
        client = super().experiment
        if resumed:
            client.update_run(self._run_id, status="RUNNING")
        elif self.run_dir.is_dir():
            (self.run_dir / MLFLOW_RUN_ID_FILE).write_text(f"{self._run_id}\n")
        return client

    def _shared_experiment(self) -> str:
        """The id of the experiment named ``experiment_name``, created if missing (once, whoever else tries)."""
        from mlflow.exceptions import MlflowException

        client = self._mlflow_client
        for attempt in range(3):
            found = client.get_experiment_by_name(self._experiment_name)
            if found is not None and found.lifecycle_stage != "deleted":
                return found.experiment_id
            try:
                return client.create_experiment(self._experiment_name, artifact_location=self._artifact_location)
            except MlflowException:
                if attempt == 2:  # not a lost race: a deleted experiment of that name, a read-only store, ...
                    raise
        raise AssertionError("unreachable")


def previous_wandb_id(save_dir: str | Path) -> str | None:
    """The id of the W&B run an earlier start of this run directory wrote (``wandb/latest-run``), if any."""
    latest = Path(save_dir) / "wandb" / "latest-run"
    if not latest.exists():
        return None
    return latest.resolve().name.rpartition("-")[2] or None


class WandbLogger(lightning_wandb.WandbLogger):
    """``pytorch_lightning.loggers.WandbLogger`` for a run directory: W&B writes into ``<save_dir>/wandb/``
    (``mode: offline`` by default), the run is named after the run directory, and a resumed run continues
    the W&B run of the earlier start (its id, ``resume="allow"``)."""

    def __init__(self, save_dir: str | Path, name: str | None = None, id: str | None = None, **kwargs: Any):
        if id is None and (id := previous_wandb_id(save_dir)) is not None:
            kwargs.setdefault("resume", "allow")
        super().__init__(save_dir=str(save_dir), name=name or tracker_run_name(save_dir), id=id, **kwargs)


def trackers(loggers: Iterable[Any]) -> list[Any]:
    """The MLflow and W&B loggers among ``loggers``."""
    return [lg for lg in loggers if isinstance(lg, (lightning_mlflow.MLFlowLogger, lightning_wandb.WandbLogger))]


@rank_zero_only
def log_config(loggers: Sequence[Any], cfg: DictConfig) -> None:
    """Give the trackers the run's resolved config: MLflow as params with dotted keys (``model.lr``, as on the
    command line), W&B as its nested run config. TensorBoard and CSV need nothing (``config.yaml``)."""
    found = trackers(loggers)
    if not found:
        return
    from mchad.rundir import flatten

    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    for logger in found:
        if isinstance(logger, lightning_mlflow.MLFlowLogger):
            # MLflow refuses to change a param: a resumed run keeps its first start's (paths may differ)
            logged = logger.experiment.get_run(logger.run_id).data.params
            logger.log_hyperparams({k: v for k, v in flatten(resolved).items() if k not in logged})
        else:
            logger.log_hyperparams(resolved)


def metric_name(*parts: Any) -> str:
    """``test/<ood_set>/<score>/<metric>``, with characters trackers refuse in names replaced by ``_``."""
    return "/".join(re.sub(r"[^\w\-. ]", "_", str(p)) for p in parts)


def result_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """The results table as tracker metrics: ``test/<ood_set>/<score>/<metric>`` per row and ``test/Accuracy``."""
    metrics: dict[str, float] = {}
    for row in rows:
        for metric in RESULT_METRICS:
            if row.get(metric) is not None:
                metrics[metric_name("test", row["ood_dataset"], row["score"], metric)] = float(row[metric])
    if rows and rows[0].get("Accuracy") is not None:
        metrics["test/Accuracy"] = float(rows[0]["Accuracy"])
    return metrics


@rank_zero_only
def log_results(loggers: Sequence[Any], rows: Sequence[dict], results_path: str | Path,
                checkpoint: str | Path | None) -> None:  # fmt: skip
    """Give the trackers the run's final results, after ``results.csv`` is written.

    MLflow: the metrics of :func:`result_metrics`, ``results.csv`` as an artifact, the tags
    ``checkpoint`` (the tested checkpoint's path) and ``results``. W&B: the same metrics (also in
    the run summary), the table as ``test/results``, ``results.csv`` as an artifact, ``checkpoint``
    in the summary; then the W&B run ends. Other loggers: nothing (results.csv lies beside them).
    """
    metrics = result_metrics(rows)
    for logger in trackers(loggers):
        if isinstance(logger, lightning_mlflow.MLFlowLogger):
            logger.log_metrics(metrics)
            client, run_id = logger.experiment, logger.run_id
            client.log_artifact(run_id, str(results_path))
            client.set_tag(run_id, "results", str(results_path))
            client.set_tag(run_id, "checkpoint", str(checkpoint or ""))
        else:
            import wandb

            run = logger.experiment
            logger.log_metrics(metrics)
            run.log({"test/results": wandb.Table(dataframe=_frame(rows))})
            run.summary.update({**metrics, "checkpoint": str(checkpoint or ""), "results": str(results_path)})
            artifact = wandb.Artifact(f"results-{run.id}", type="results")
            artifact.add_file(str(results_path))
            run.log_artifact(artifact)
            run.finish()


def _frame(rows: Sequence[dict]) -> Any:
    import pandas as pd

    return pd.DataFrame(list(rows))
