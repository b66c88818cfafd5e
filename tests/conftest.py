"""Shared fixtures: composing the real config for tiny CPU runs, tiny image-folder trees, one trained
quickstart run for the whole session, and the independent evaluation that tests check results against."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from filelock import FileLock
from omegaconf import DictConfig
from PIL import Image

from mchad.config import compose
from mchad.evaluation.oracle import sklearn_metrics
from mchad.evaluation.results import read_results
from mchad.train import build_run, train

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# overrides that make any experiment a few-second CPU run
TINY = [
    "backbone=wrn-small",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.batch_size=8",
    "data.val_size=0.2",
    "data.eval_batch_size=32",
    "model.pretrained_checkpoint=null",
]

METRICS = ("Accuracy", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95")


def write_image_tree(root: Path, n_classes: int, per_class: int, splits=("train", "test"), seed: int = 0) -> Path:
    """A folder tree ``root/<split>/<class>/<i>.png`` of random 32x32 RGB images."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c in range(n_classes):
            folder = root / split / f"class{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def wait_for(condition, timeout: float = 300, what: str = "") -> None:
    """Poll ``condition`` (another process's progress) every 50 ms; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def run_config(tmp_path):
    """``run_config(*overrides)`` composes the project config with data and logs under tmp_path."""

    def make(*overrides: str, run_dir: Path | None = None):
        run_dir = run_dir or tmp_path / "run"
        return compose(
            [f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}", *overrides],
            output_dir=run_dir,
        ), run_dir

    return make


@pytest.fixture(scope="session")
def image_trees(tmp_path_factory):
    """Tiny ID trees with 10 and 100 classes and an outlier folder, built once per session."""
    base = tmp_path_factory.mktemp("trees")
    return {
        10: write_image_tree(base / "c10", 10, 3),
        100: write_image_tree(base / "c100", 100, 1),
        "outliers": write_image_tree(base / "outliers", 1, 24, splits=("all",)),
    }


@pytest.fixture(scope="session")
def session_root(tmp_path_factory, worker_id) -> Path:
    """A folder of this test session that every pytest-xdist worker sees (each worker has its own basetemp)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


class QuickstartRun(NamedTuple):
    cfg: DictConfig
    run_dir: Path
    rows: list[dict]


QUICKSTART_OVERRIDES = [
    "experiment=quickstart",
    "trainer.max_epochs=2",
    "threads=1",
    "data.eval_batch_size=256",
    "trainer.limit_test_batches=2",
]
"""The session's quickstart run: 2 epochs of the digits on one thread (a test that repeats part of it in another
process gets the same numbers), tested with the best epoch's weights on the whole ID test set (361 digits) and
512 images of each OOD set."""


@pytest.fixture(scope="session")
def quickstart_run(session_root) -> QuickstartRun:
    """A finished quickstart run (``QUICKSTART_OVERRIDES``), trained once per test session and shared by every
    test and xdist worker. Read-only: a test that changes a run directory copies it first.

    Under the lock the first worker trains; the others find results.csv complete and skip (``train``'s
    restartable runs), reading the same results."""
    root = session_root / "quickstart"
    root.mkdir(exist_ok=True)
    run_dir = root / "run"
    cfg = compose(
        [*QUICKSTART_OVERRIDES, f"paths.data_dir={root / 'data'}", f"paths.log_dir={root / 'logs'}"],
        output_dir=run_dir,
    )
    with FileLock(root / ".lock"):
        train(cfg, run_dir)
    return QuickstartRun(cfg, run_dir, read_results(run_dir / "results.csv").to_dict("records"))


@pytest.fixture
def tested(monkeypatch) -> dict:
    """Catches the module and data module that ``Trainer.test`` is called with."""
    seen: dict = {}
    original = pl.Trainer.test

    def spy(self, model=None, *args, **kwargs):
        seen["module"], seen["datamodule"] = model, kwargs.get("datamodule")
        return original(self, model, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "test", spy)
    return seen


@torch.no_grad()
def outputs_on_test_batches(module, datamodule, limit: int | None) -> dict[str, tuple[torch.Tensor, dict]]:
    """Test set name -> (labels, the module's outputs) over the first ``limit`` batches (None: all), as the
    Trainer saw them."""
    module.eval()
    outputs = {}
    for name, loader in zip(datamodule.test_set_names, datamodule.test_dataloader()):
        chunks, labels = [], []
        for k, (x, y) in enumerate(loader):
            if k == limit:
                break
            chunks.append(module.method(module.backbone(module.augment(x, train=False))))
            labels.append(y)
        outputs[name] = (torch.cat(labels), {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]})
    return outputs


def independent_results(cfg: DictConfig, checkpoint: Path) -> dict[tuple[str, str], dict]:
    """:func:`expected_rows` of the weights in ``checkpoint`` on the test sets of ``cfg`` (the batches the
    Trainer tests: ``trainer.limit_test_batches`` when it is a count)."""
    run = build_run(cfg, Path(cfg.paths.output_dir), evaluation_only=True)
    run.module.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    run.datamodule.setup("test")
    limit = cfg.trainer.get("limit_test_batches")
    assert isinstance(limit, int) or limit in (None, 1.0), f"a fraction of the test batches: {limit}"
    outputs = outputs_on_test_batches(run.module, run.datamodule, limit if isinstance(limit, int) else None)
    return expected_rows(run.module.method, outputs, run.datamodule.test_set_names[0])


def expected_rows(method, outputs: dict, id_name: str) -> dict[tuple[str, str], dict]:
    """(OOD set, score) -> Accuracy, the four OOD metrics (scikit-learn) and the sample counts."""
    id_labels, id_out = outputs[id_name]
    accuracy = float((method.predict(id_out) == id_labels).double().mean())
    id_scores = method.scores(id_out)
    rows = {}
    for name, (_, out) in outputs.items():
        if name == id_name:
            continue
        for score, ood_score in method.scores(out).items():
            metrics = sklearn_metrics(id_scores[score].double().numpy(), ood_score.double().numpy())
            rows[name, score] = {"Accuracy": accuracy, **metrics, "n_id": len(id_labels), "n_ood": len(ood_score)}
    return rows


def assert_results_match(results: pd.DataFrame, expected: dict) -> None:
    assert sorted(zip(results.ood_dataset, results.score)) == sorted(expected)
    for row in results.to_dict("records"):
        want = expected[row["ood_dataset"], row["score"]]
        assert (row["n_id"], row["n_ood"]) == (want["n_id"], want["n_ood"]), row
        for metric in METRICS:
            # float32 outputs computed twice the same way; 1e-6 leaves room only for rounding
            assert row[metric] == pytest.approx(want[metric], abs=1e-6), (metric, row)
