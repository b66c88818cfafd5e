"""Loggers that a resumed run continues instead of restarting, the optional trackers, and what a run tells them.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts, so a run resumed
from its checkpoint would lose the rows of the epochs before the kill. :class:`CSVLogger`, a
small logger of its own, appends to the file instead, keeping its columns (TensorBoard needs nothing: a resumed
run writes a new event file beside the old ones, with the step counts from the checkpoint).

The trackers (``logger=mlflow``, ``logger=wandb``, docs/trackers.md) are Lightning's own
loggers, made fit for run directories: :class:`MLFlowLogger` (a local SQLite store that
concurrent sweep jobs share, the resolved config as params once each) and :class:`WandbLogger`
each continue the tracker run of a resumed run directory. Lightning logs the per-epoch metrics;
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
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger
from pytorch_lightning.loggers import mlflow as lightning_mlflow
from pytorch_lightning.loggers import wandb as lightning_wandb
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from mchad.errors import ConfigError
from mchad.files import file_lock
from mchad.rundir import flatten

log = logging.getLogger(__name__)


class CSVLogger(Logger):
    """Every logged scalar in ``<save_dir>/<name>/metrics.csv``: one row per logging step, a ``step`` column and one
    column per metric (sorted), as Lightning's CSV logger writes it; a run resumed from its checkpoint appends.

    Written here because Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts (its warning
    "Previous log files in this directory will be deleted") and has no public switch to keep it: a resumed run would
    lose the rows of the epochs before the kill. Hyperparameters are not written (``config.yaml`` holds them).
    """

    METRICS_FILE = "metrics.csv"

    def __init__(self, save_dir: str | Path, name: str = "csv", version: str = "", flush_logs_every_n_steps: int = 100):
        super().__init__()
        self.root, self.folder, self.run_version = Path(save_dir), name, version
        self.flush_every = flush_logs_every_n_steps
        self.pending: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return self.folder

    @property
    def version(self) -> str:
        return self.run_version

    @property
    def save_dir(self) -> str:
        return str(self.root)

    @property
    def log_dir(self) -> str:
        return str(self.root / self.folder / str(self.run_version))

    @property
    def metrics_path(self) -> Path:
        return Path(self.log_dir) / self.METRICS_FILE

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the run directory's ``config.yaml`` holds the whole config."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {key: value.item() if hasattr(value, "item") else value for key, value in metrics.items()}
        self.pending.append({**row, "step": step if step is not None else len(self.pending)})
        if len(self.pending) >= self.flush_every:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        """Append the pending rows; a metric the file has no column for yet rewrites it with the wider header."""
        if not self.pending:
            return
        path = self.metrics_path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, Any]] = []
        header: list[str] = []
        if path.is_file():
            with path.open(newline="") as file:
                reader = csv.DictReader(file)
                header = list(reader.fieldnames or [])
                columns = sorted(set(header).union(*self.pending))
                if columns != header:
                    kept = list(reader)
        else:
            columns = sorted(set().union(*self.pending))
        rewrite = columns != header
        with path.open("w" if rewrite else "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            if rewrite:
                writer.writeheader()
                writer.writerows(kept)
            writer.writerows(self.pending)
        self.pending = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


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


SQLITE_PREFIX = "sqlite:///"
ARTIFACTS_FOLDER = "mlartifacts"
"""Beside a SQLite store: the folder its experiments keep their artifacts in (``mlflow server``'s name for it)."""

MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE_LENGTH = 6000
"""MLflow's limits on ``log-batch`` (its REST API reference): params per request, characters of a param value."""


def sqlite_path(uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///<path>`` tracking URI (relative or, with a fourth slash, absolute)."""
    return Path(uri[len(SQLITE_PREFIX) :]) if uri and uri.startswith(SQLITE_PREFIX) else None


def store_lock(uri: str | None) -> AbstractContextManager[None]:
    """Held while a SQLite store is opened: the first open creates the tables, and MLflow's migrations fail
    ("table ... already exists") when sweep jobs that start together run them at once."""
    database = sqlite_path(uri)
    return nullcontext() if database is None else file_lock(database)


class MLFlowLogger(lightning_mlflow.MLFlowLogger):
    """``pytorch_lightning.loggers.MLFlowLogger`` for a run directory, through the public API only (its
    constructor's ``run_id`` and ``artifact_location``, its ``experiment`` client, ``mlflow.MlflowClient``).

    * The store is a SQLite database (the default, ``sqlite:///<log_dir>/mlflow.db``, MLflow's recommended local
      store): sweep jobs that start together open it one at a time (:func:`store_lock`) and create the experiment
      once (the loser of the race takes the winner's). Its experiments keep their artifacts in ``mlartifacts/``
      beside the database unless ``artifact_location`` says otherwise (MLflow's default would be ``./mlruns``
      under whatever folder the run was started from).
    * The MLflow run id is kept in ``<run_dir>/.mlflow_run_id``: a resumed run (killed, requeued) continues its
      MLflow run instead of starting a second one, unless that run is not in this store (another
      ``tracking_uri``), then a new one starts.
    * The params are the resolved config with the command line's dotted keys, once each, logged by
      :func:`log_config`; Lightning's own call with the module's hyperparameters (a part of the same config
      under ``/``-joined names) is left out, so that no setting is a param twice.
    """

    def __init__(self, run_dir: str | Path, tracking_uri: str | None = None, experiment_name: str = "mchad",
                 artifact_location: str | None = None, run_name: str | None = None, tags: dict | None = None,
                 run_id: str | None = None, **kwargs: Any):  # fmt: skip
        import mlflow

        self.run_dir = Path(run_dir)
        # without one, MLflow's own choice: MLFLOW_TRACKING_URI, else its default store
        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        if self.tracking_uri.startswith("file:"):
            # MLflow 3 refuses its file store unless asked for it; whoever names one asks for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        database = sqlite_path(self.tracking_uri)
        if artifact_location is None and database is not None:
            artifact_location = (database.parent.absolute() / ARTIFACTS_FOLDER).as_uri()
        self.experiment_name, self.artifact_location = experiment_name, artifact_location
        id_file = self.run_dir / MLFLOW_RUN_ID_FILE
        if run_id is None and id_file.is_file():
            run_id = id_file.read_text().strip() or None
        with store_lock(self.tracking_uri):
            if run_id is not None and not self.holds_run(run_id):
                log.warning("MLflow run %s of %s is not in %s: starting a new one", run_id, self.run_dir,
                            self.tracking_uri)  # fmt: skip
                run_id = None
            super().__init__(
                experiment_name=experiment_name, run_name=run_name or tracker_run_name(self.run_dir),
                tracking_uri=self.tracking_uri, tags={"run_dir": str(self.run_dir.absolute()), **(tags or {})},
                artifact_location=artifact_location, run_id=run_id, **kwargs,
            )  # fmt: skip
        self.resumed, self.started = run_id is not None, False

    def holds_run(self, run_id: str) -> bool:
        """Whether the store has the MLflow run ``run_id``."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            MlflowClient(self.tracking_uri).get_run(run_id)
        except MlflowException:
            return False
        return True

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self.started:
            return super().experiment
        if not self.resumed:
            self.shared_experiment()
        client = super().experiment
        self.started = True  # before reading run_id, which asks for the experiment again
        if self.resumed:
            client.update_run(self.run_id, status="RUNNING")
        elif self.run_dir.is_dir():
            (self.run_dir / MLFLOW_RUN_ID_FILE).write_text(f"{self.run_id}\n")
        return client

    def shared_experiment(self) -> str:
        """The id of the experiment named ``experiment_name``, created if missing (once, whoever else tries)."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        for attempt in range(3):
            found = client.get_experiment_by_name(self.experiment_name)
            if found is not None and found.lifecycle_stage != "deleted":
                return found.experiment_id
            try:
                return client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
            except MlflowException:
                if attempt == 2:  # not a lost race: a deleted experiment of that name, a read-only store, ...
                    raise
        raise AssertionError("unreachable")

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """Nothing: the run's params come from :func:`log_config` (the class docstring says why)."""


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
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    for logger in found:
        if isinstance(logger, lightning_mlflow.MLFlowLogger):
            log_params(logger.experiment, logger.run_id, flatten(resolved))
        else:
            logger.log_hyperparams(resolved)


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    """Log ``params`` to the MLflow run ``run_id`` (``client``: an ``MlflowClient``), in batches MLflow accepts.

    MLflow refuses to change a param, so a resumed run keeps its first start's values (paths may differ) and adds
    only the keys that start did not log."""
    from mlflow.entities import Param

    logged = client.get_run(run_id).data.params
    new = [Param(key, str(value)[:MAX_PARAM_VALUE_LENGTH]) for key, value in params.items() if key not in logged]
    for start in range(0, len(new), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=new[start : start + MAX_PARAMS_PER_BATCH])


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
