"""End to end through train(): the offline quickstart data, the real loop, real loggers and checkpoints."""

from __future__ import annotations

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from mchad.config import compose
from mchad.errors import ConfigError
from mchad.evaluation.results import RESULT_COLUMNS
from mchad.nn.wrn import WideResNet
from mchad.train import evaluate_checkpoint, train


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """A 2-epoch quickstart run (digits), shared by the tests of this module."""
    tmp = tmp_path_factory.mktemp("quickstart")
    run_dir = tmp / "run"
    cfg = compose(
        ["experiment=quickstart", f"paths.data_dir={tmp / 'data'}", "trainer.max_epochs=2"], output_dir=run_dir
    )
    rows = train(cfg, run_dir)
    return cfg, run_dir, rows


def test_quickstart_writes_results_checkpoints_and_logs(quickstart_run):
    cfg, run_dir, rows = quickstart_run
    results = pd.read_csv(run_dir / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert set(results.ood_dataset) == {"digits-ood", "gaussian", "uniform"}
    assert set(results.score) == {"distance"}
    assert (results.experiment == "quickstart").all() and (results.method == "mchad").all()
    assert (results.epochs == 2).all()
    for metric in ("Accuracy", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95"):
        assert results[metric].between(0, 1).all()
    assert results.Accuracy.iloc[0] > 1 / 6, "two epochs must beat chance on 6 digit classes"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.paths.data_dir == cfg.paths.data_dir and saved.method.n_classes == 6 and "hydra" not in saved
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    for name in ("Loss/center/train_epoch", "Loss/ce/train_epoch", "Accuracy/val", "distance/AUROC/val"):
        assert name in metrics.columns, name
    assert len(rows) == len(results)


def test_complete_run_is_skipped(quickstart_run, monkeypatch):
    cfg, run_dir, rows = quickstart_run
    monkeypatch.setattr(pl.Trainer, "fit", lambda *a, **k: pytest.fail("a complete run must not train again"))
    again = train(cfg, run_dir)
    assert len(again) == len(rows)


def test_killed_run_resumes_from_last_checkpoint(quickstart_run, tmp_path, monkeypatch):
    cfg, run_dir, _ = quickstart_run
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    (resumed_dir / "checkpoints" / "last.ckpt").write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    seen = {}
    original_fit = pl.Trainer.fit

    def spy_fit(self, model, datamodule=None, ckpt_path=None, weights_only=None):
        seen["ckpt_path"], seen["weights_only"] = ckpt_path, weights_only
        return original_fit(self, model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=weights_only)

    monkeypatch.setattr(pl.Trainer, "fit", spy_fit)
    cfg = compose(
        ["experiment=quickstart", f"paths.data_dir={cfg.paths.data_dir}", "trainer.max_epochs=2", "logger=none"],
        output_dir=resumed_dir,
    )
    train(cfg, resumed_dir)
    assert seen["ckpt_path"] == str(resumed_dir / "checkpoints" / "last.ckpt")
    assert seen["weights_only"] is True, "no environment variable may turn safe loading off"
    assert (resumed_dir / "results.csv").is_file()


def test_eval_of_checkpoint_alone_reproduces_results(quickstart_run, tmp_path):
    _, run_dir, _ = quickstart_run
    best = run_dir / "checkpoints" / "best.ckpt"
    # nothing but the checkpoint: the model, data and test sets come from the run's config.yaml;
    # the default experiment's data (CIFAR-10), pretrained file and outliers are never read
    eval_cfg = compose([f"ckpt_path={best}", "logger=none"], output_dir=tmp_path / "eval")
    evaluate_checkpoint(eval_cfg, tmp_path / "eval")
    evaluated = pd.read_csv(tmp_path / "eval" / "results.csv")
    trained = pd.read_csv(run_dir / "results.csv")
    metrics = ["ood_dataset", "score", "Accuracy", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95", "n_id", "n_ood"]
    pd.testing.assert_frame_equal(evaluated[metrics], trained[metrics])
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert (evaluated.epochs == state["epoch"] + 1).all(), "epochs = completed training epochs"


def test_eval_refuses_an_override_that_changes_the_model(quickstart_run, tmp_path):
    _, run_dir, _ = quickstart_run
    eval_cfg = compose([f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", "method.n_embedding=4"],
                       output_dir=tmp_path / "eval")  # fmt: skip
    with pytest.raises(ConfigError, match="method.n_embedding would change the model"):
        evaluate_checkpoint(eval_cfg, tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


# The table of bad inputs is tests/test_bad_input.py; this one needs a real checkpoint file of another shape.


def test_pretrained_checkpoint_of_wrong_shape(run_config, tmp_path, monkeypatch):
    monkeypatch.setattr(pl.Trainer, "fit", lambda *a, **k: pytest.fail("training must not start"))
    wrong = tmp_path / "wrn-40-4.pt"
    torch.save(WideResNet(depth=40, widen_factor=4, drop_rate=0.0, n_outputs=1000).state_dict(), wrong)
    cfg, run_dir = run_config("experiment=quickstart", "backbone=wrn40-2", f"model.pretrained_checkpoint={wrong}")
    with pytest.raises(ConfigError) as error:
        train(cfg, run_dir)
    assert "\n" not in str(error.value)
    assert not (run_dir / "results.csv").exists()
