"""Loggers: the CSV log a resumed run appends to, and the trackers ``logger=mlflow`` (a local SQLite store) and
``logger=wandb`` (offline).

Each runs a tiny quickstart through ``run.py`` and reads back what the tracker holds: the
resolved config, the per-epoch metrics, the results table per OOD set and score (equal to
results.csv) and the tested checkpoint's path. Nothing here touches the network.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import wait_for

from mchad.errors import ConfigError
from mchad.loggers import CSVLogger, check_packages, metric_name, previous_wandb_id, result_metrics
from mchad.rundir import flatten

ROOT = Path(__file__).resolve().parents[1]

TINY = ["experiment=quickstart", "debug=limit", "trainer.max_epochs=1", "data.eval_batch_size=128", "seed=3",
        "~callbacks.progress_bar"]  # fmt: skip
OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def command(tmp_path: Path, *overrides: str) -> list[str]:
    paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}"]
    return [sys.executable, str(ROOT / "run.py"), *TINY, *paths, *overrides]


def environment(env: dict | None = None) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **OFFLINE, **(env or {})}


def run(tmp_path: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command(tmp_path, *overrides), cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=environment(env))  # fmt: skip


def the_run_dir(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "logs" / "runs" / "quickstart").iterdir()
    return run_dir


def expected_metrics(run_dir: Path) -> dict[str, float]:
    results = pd.read_csv(run_dir / "results.csv")
    assert len(results) == 3  # digits-ood, gaussian, uniform x distance
    return {f"test/{r.ood_dataset}/{r.score}/AUROC": r.AUROC for r in results.itertuples()}


def test_mlflow_run_killed_and_resumed_is_one_run_in_a_sqlite_store_with_config_metrics_and_results(tmp_path):
    """Killed after its first checkpoint, then resumed: one MLflow run in ``logs/mlflow.db`` holding the resolved
    config as dotted params (once each), every epoch's metrics, the results of results.csv and the checkpoint."""
    run_dir = tmp_path / "logs" / "runs" / "quickstart" / "one"
    args = ["trainer.max_epochs=3", "logger=mlflow", f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen(command(tmp_path, *args), cwd=tmp_path, env=environment(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(
        lambda: (run_dir / "checkpoints" / "last.ckpt").exists() or first.poll() is not None,
        what="the first checkpoint",
    )
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL and not (run_dir / "results.csv").exists()
    first_id = (run_dir / ".mlflow_run_id").read_text().strip()
    resumed = subprocess.run(command(tmp_path, *args), cwd=tmp_path, env=environment(), capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from" in resumed.stdout + resumed.stderr

    store = tmp_path / "logs" / "mlflow.db"
    assert store.is_file() and not (tmp_path / "logs" / "mlruns").exists() and not (tmp_path / "mlruns").exists()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("quickstart")
    assert experiment.artifact_location == (tmp_path / "logs" / "mlartifacts").as_uri()
    (found,) = client.search_runs([experiment.experiment_id])
    # the resumed start continued the killed start's run
    assert found.info.run_id == first_id == (run_dir / ".mlflow_run_id").read_text().strip()
    assert found.info.status == "FINISHED" and found.info.run_name == run_dir.name
    # params: the resolved config's dotted keys, once each, with its values
    config = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert found.data.params == {key: str(value) for key, value in config.items()}
    assert found.data.params["model.optimizer.lr"] == "0.003" and found.data.params["seed"] == "3"
    # the results: exactly the numbers of results.csv
    results = pd.read_csv(run_dir / "results.csv")
    expected = {f"test/{r['ood_dataset']}/{r['score']}/{metric}": r[metric]
                for r in results.to_dict("records") for metric in ("AUROC", "AUPR-IN", "AUPR-OUT", "FPR95")}  # fmt: skip
    expected["test/Accuracy"] = results["Accuracy"].iloc[0]
    assert {k: v for k, v in found.data.metrics.items() if k.startswith("test/")} == expected
    # the per-epoch metrics of both starts: one validation accuracy per epoch, equal to the CSV log's
    csv_log = pd.read_csv(run_dir / "csv" / "metrics.csv").dropna(subset=["Accuracy/val"])
    history = sorted((m.step, m.value) for m in client.get_metric_history(found.info.run_id, "Accuracy/val"))
    assert history == list(zip(csv_log["step"], csv_log["Accuracy/val"], strict=True)) and len(history) == 3
    assert found.data.tags["run_dir"] == str(run_dir)
    assert found.data.tags["checkpoint"] == str(run_dir / "checkpoints" / "best.ckpt")
    assert [a.path for a in client.list_artifacts(found.info.run_id)] == ["results.csv"]
    artifact = Path(client.download_artifacts(found.info.run_id, "results.csv", str(tmp_path)))
    assert artifact.read_bytes() == (run_dir / "results.csv").read_bytes()


OPEN_A_FRESH_STORE = """
import sys, time
from pathlib import Path
from mchad.loggers import MLFlowLogger
run_dir, uri, jobs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(run_dir / "ready").touch()  # imports done: wait for the other jobs, then all open the store at once
while len(list(run_dir.parent.glob("*/ready"))) < jobs:
    time.sleep(0.01)
logger = MLFlowLogger(run_dir=run_dir, tracking_uri=uri, experiment_name="race")
logger.experiment
logger.finalize("success")
"""


def test_sweep_jobs_opening_a_fresh_sqlite_store_at_once_share_it(tmp_path):
    """MLflow's first open of a SQLite store creates its tables; jobs that do so at once must not collide (without
    the store lock, MLflow's migrations fail with "table ... already exists")."""
    uri, jobs = f"sqlite:///{tmp_path / 'logs' / 'mlflow.db'}", 2
    processes = []
    for job in range(jobs):
        (tmp_path / str(job)).mkdir()
        processes.append(subprocess.Popen([sys.executable, "-c", OPEN_A_FRESH_STORE, str(tmp_path / str(job)), uri,
                                           str(jobs)], env=environment(), stderr=subprocess.PIPE, text=True))  # fmt: skip
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()
    import mlflow

    client = mlflow.MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "race"]
    runs = client.search_runs([experiment.experiment_id])
    ids = {(tmp_path / str(job) / ".mlflow_run_id").read_text().strip() for job in range(jobs)}
    assert {run.info.run_id for run in runs} == ids and len(ids) == jobs
    assert not list((tmp_path / "logs").glob(".*.lock")), "the store lock leaves nothing behind"


def test_csv_logger_appends_on_resume_and_widens_its_header(tmp_path):
    first = CSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"loss": 0.5}, step=0)
    first.log_metrics({"loss": 0.25, "acc": 0.75}, step=1)
    first.finalize("success")
    resumed = CSVLogger(tmp_path, name="csv", version="")  # what a resumed run makes: the file is kept
    resumed.log_metrics({"loss": 0.125, "lr": 0.001}, step=2)  # a new column rewrites the header
    resumed.finalize("success")
    again = CSVLogger(tmp_path, name="csv", version="", flush_logs_every_n_steps=1)
    again.log_metrics({"acc": 1.0}, step=3)  # flushed at once, appended under the same header
    assert resumed.log_dir == str(tmp_path / "csv")
    assert (tmp_path / "csv" / "metrics.csv").read_text() == (
        "acc,loss,lr,step\n,0.5,,0\n0.75,0.25,,1\n,0.125,0.001,2\n1.0,,,3\n"
    )


def wandb_records(path: Path):
    """The records of a W&B run file (``run-<id>.wandb``: a header, then LevelDB-log framed protobufs)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks = 7, 32768, []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


@pytest.mark.slow  # a full run like the MLflow test's; make test-slow
def test_wandb_offline_run_holds_config_metrics_results_and_checkpoint(tmp_path):
    result = run(tmp_path, "logger=wandb")
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = the_run_dir(tmp_path)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    summary, config, history_keys, artifacts = {}, {}, set(), 0
    for record in wandb_records(offline / f"run-{offline.name.rpartition('-')[2]}.wandb"):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            summary.update({item.key: json.loads(item.value_json) for item in record.summary.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history_keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "artifact":
            artifacts += 1
        elif kind == "run":
            assert record.run.display_name == run_dir.name and record.run.run_group == "quickstart"
    for name, value in expected_metrics(run_dir).items():
        assert summary[name] == pytest.approx(value), name
    assert summary["checkpoint"] == str(run_dir / "checkpoints" / "best.ckpt")
    assert {"Accuracy/val", "Loss/total/val", "distance/AUROC/val"} <= history_keys
    assert config["seed"] == 3 and config["model"]["optimizer"]["lr"] == 0.003 and config["name"] == "quickstart"
    assert artifacts >= 1  # results.csv
    assert previous_wandb_id(run_dir) == offline.name.rpartition("-")[2]  # what a resumed run continues


def test_missing_tracker_package_is_one_line_error_before_anything_runs(tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['mlflow'] = None\n")  # as if not installed
    result = run(tmp_path, "logger=mlflow", env={"PYTHONPATH": str(blocker)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: logger.mlflow (mchad.loggers.MLFlowLogger) needs the mlflow package, which is not installed: "
        "pip install 'mchad[mlflow]' (or leave it out: logger=default)"
    ]
    assert not (tmp_path / "logs").exists()


def test_check_packages_and_metric_names(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"logger.wandb .* pip install 'mchad\[wandb\]'"):
        check_packages(
            {"csv": {"_target_": "mchad.loggers.CSVLogger"}, "wandb": {"_target_": "mchad.loggers.WandbLogger"}}
        )
    check_packages({"tensorboard": {"_target_": "pytorch_lightning.loggers.TensorBoardLogger"}})
    check_packages(None)
    assert metric_name("test", "my set (v2)", "distance", "AUROC") == "test/my set _v2_/distance/AUROC"
    rows = [{"ood_dataset": "a", "score": "msp", "Accuracy": 0.9, "AUROC": 0.8, "AUPR-IN": 0.7, "AUPR-OUT": 0.6,
             "FPR95": 0.5}]  # fmt: skip
    assert result_metrics(rows) == {"test/a/msp/AUROC": 0.8, "test/a/msp/AUPR-IN": 0.7, "test/a/msp/AUPR-OUT": 0.6,
                                    "test/a/msp/FPR95": 0.5, "test/Accuracy": 0.9}  # fmt: skip


def test_a_run_id_the_store_does_not_hold_starts_a_new_mlflow_run(tmp_path):
    """A run directory resumed against another store (its .mlflow_run_id unknown there) gets a new run, not an error."""
    from mchad.loggers import MLFlowLogger

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".mlflow_run_id").write_text("0123456789abcdef0123456789abcdef\n")
    logger = MLFlowLogger(run_dir=run_dir, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_name="x")
    client = logger.experiment
    (run,) = client.search_runs([client.get_experiment_by_name("x").experiment_id])
    assert run.info.run_id == logger.run_id != "0123456789abcdef0123456789abcdef"
    assert (run_dir / ".mlflow_run_id").read_text() == f"{run.info.run_id}\n"
    assert client.get_experiment_by_name("x").artifact_location == (tmp_path / "mlartifacts").as_uri()
