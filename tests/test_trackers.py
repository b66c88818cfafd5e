"""Experiment trackers next to TensorBoard: ``logger=mlflow`` (a local file store) and ``logger=wandb`` (offline).

Each runs a tiny quickstart through ``run.py`` and reads back what the tracker holds: the
resolved config, the per-epoch metrics, the results table per OOD set and score (equal to
results.csv) and the tested checkpoint's path. Nothing here touches the network.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mchad.errors import ConfigError
from mchad.loggers import check_packages, metric_name, previous_wandb_id, result_metrics

ROOT = Path(__file__).resolve().parents[1]

TINY = ["experiment=quickstart", "debug=limit", "trainer.max_epochs=1", "data.eval_batch_size=128", "seed=3",
        "~callbacks.progress_bar"]  # fmt: skip
OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_ALLOW_FILE_STORE": "true"}


def run(tmp_path: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}"]
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *TINY, *paths, *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **OFFLINE, **(env or {})},
    )


def the_run_dir(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "logs" / "runs" / "quickstart").iterdir()
    return run_dir


def expected_metrics(run_dir: Path) -> dict[str, float]:
    results = pd.read_csv(run_dir / "results.csv")
    assert len(results) == 3  # digits-ood, gaussian, uniform x distance
    return {f"test/{r.ood_dataset}/{r.score}/AUROC": r.AUROC for r in results.itertuples()}


def test_mlflow_run_leaves_a_local_store_with_config_metrics_results_and_checkpoint(tmp_path, monkeypatch):
    result = run(tmp_path, "logger=mlflow")
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = the_run_dir(tmp_path)
    store = tmp_path / "logs" / "mlruns"
    assert store.is_dir() and (run_dir / "tensorboard").is_dir() and (run_dir / "csv" / "metrics.csv").is_file()

    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(f"file:{store}")
    try:
        runs = mlflow.search_runs(experiment_names=["quickstart"])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(runs) == 1
    found = runs.iloc[0]
    assert found["status"] == "FINISHED" and found["tags.mlflow.runName"] == run_dir.name
    for name, value in expected_metrics(run_dir).items():
        assert found[f"metrics.{name}"] == pytest.approx(value), name
    assert 0 <= found["metrics.test/Accuracy"] <= 1
    # the per-epoch metrics Lightning logs, and the resolved config as dotted params
    assert {"metrics.Accuracy/val", "metrics.Loss/total/val", "metrics.distance/AUROC/val"} <= set(runs.columns)
    assert found["params.seed"] == "3" and found["params.name"] == "quickstart"
    assert float(found["params.model.optimizer.lr"]) == 0.003 and found["params.method.n_embedding"] == "8"
    assert found["params.paths.log_dir"] == str(tmp_path / "logs")
    assert found["tags.run_dir"] == str(run_dir)
    assert found["tags.checkpoint"] == str(run_dir / "checkpoints" / "best.ckpt")
    artifacts = mlflow.MlflowClient(f"file:{store}").list_artifacts(found["run_id"])
    assert [a.path for a in artifacts] == ["results.csv"]
    assert (run_dir / ".mlflow_run_id").read_text().strip() == found["run_id"]

    # a resumed run continues its MLflow run (the id kept in the run directory) instead of starting another
    from mchad.loggers import MLFlowLogger

    again = MLFlowLogger(run_dir=run_dir, tracking_uri=f"file:{store}", experiment_name="quickstart")
    assert again.run_id == found["run_id"]
    assert len(mlflow.MlflowClient(f"file:{store}").search_runs([found["experiment_id"]])) == 1


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
