"""End to end through train(): the offline quickstart data, the real loop, real loggers and checkpoints."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import QUICKSTART_OVERRIDES, assert_results_match, independent_results
from omegaconf import OmegaConf

from mchad.config import compose
from mchad.errors import ConfigError
from mchad.evaluation.results import RESULT_COLUMNS
from mchad.nn.wrn import WideResNet
from mchad.train import evaluate_checkpoint, train


def history(run_dir) -> pd.Series:
    """Accuracy/val by epoch, from the run's CSV log."""
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    return metrics.dropna(subset=["Accuracy/val"]).set_index("epoch")["Accuracy/val"]


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_quickstart_writes_results_checkpoints_and_logs(quickstart_run):
    cfg, run_dir, rows = quickstart_run
    results = pd.read_csv(run_dir / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert set(results.ood_dataset) == {"digits-ood", "gaussian", "uniform"}
    assert set(results.score) == {"distance"}
    assert (results.experiment == "quickstart").all() and (results.method == "mchad").all()
    assert (results.epochs == 2).all()
    # every number: scikit-learn's metrics on the outputs of the tested (best) weights, computed here again
    assert_results_match(results, independent_results(cfg, run_dir / "checkpoints" / "best.ckpt"))
    assert results.Accuracy.iloc[0] > 1 / 6, "two epochs must beat chance on 6 digit classes"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.paths.data_dir == cfg.paths.data_dir and saved.method.n_classes == 6 and "hydra" not in saved
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    for name in ("Loss/center/train_epoch", "Loss/ce/train_epoch", "Accuracy/val", "distance/AUROC/val"):
        assert name in metrics.columns, name
    assert len(rows) == len(results)


def test_the_best_epoch_is_tested_when_it_is_not_the_last(quickstart_run):
    """test_checkpoint=best: the weights tested are those of the epoch with the highest Accuracy/val, here
    not the last one, so testing last.ckpt (or the weights in memory) gives other numbers."""
    cfg, run_dir, _ = quickstart_run
    accuracy = history(run_dir)
    best_epoch, last_epoch = int(accuracy.idxmax()), cfg.trainer.max_epochs - 1  # idxmax: the first of equals
    assert sorted(accuracy.index) == [0, 1] and best_epoch != last_epoch, f"the case this test needs: {accuracy}"
    best, last = run_dir / "checkpoints" / "best.ckpt", run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(best, weights_only=True)["epoch"] == best_epoch
    assert torch.load(last, weights_only=True)["epoch"] == last_epoch
    results = pd.read_csv(run_dir / "results.csv")
    expected = independent_results(cfg, best)
    assert_results_match(results, expected)
    # the two epochs' weights give different numbers, so the comparison above tells them apart
    of_last = independent_results(cfg, last)
    assert any(expected[k][m] != of_last[k][m] for k in expected for m in ("Accuracy", "AUROC")), of_last


def test_complete_run_is_skipped(quickstart_run, monkeypatch):
    cfg, run_dir, rows = quickstart_run
    monkeypatch.setattr(pl.Trainer, "fit", lambda *a, **k: pytest.fail("a complete run must not train again"))
    again = train(cfg, run_dir)
    assert pd.DataFrame(again).equals(pd.DataFrame(rows))


def test_killed_run_resumes_from_last_checkpoint_and_trains_on_as_the_whole_run(quickstart_run, tmp_path, monkeypatch):
    """A run directory holding only the checkpoint of epoch 0 (what a run killed during epoch 1 leaves) trains
    epoch 1 from it: the weights, optimizer state and validation metrics at the end equal the uninterrupted run's."""
    cfg, run_dir, _ = quickstart_run
    after_epoch_0 = run_dir / "checkpoints" / "best.ckpt"
    assert torch.load(after_epoch_0, weights_only=True)["epoch"] == 0, "best.ckpt is the checkpoint of epoch 0"
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(after_epoch_0, resumed_dir / "checkpoints" / "last.ckpt")
    seen = {}
    original_fit = pl.Trainer.fit

    def spy_fit(self, model, datamodule=None, ckpt_path=None, weights_only=None):
        seen["ckpt_path"], seen["weights_only"] = ckpt_path, weights_only
        return original_fit(self, model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=weights_only)

    monkeypatch.setattr(pl.Trainer, "fit", spy_fit)
    cfg = compose(
        [*QUICKSTART_OVERRIDES, f"paths.data_dir={cfg.paths.data_dir}", "logger=none", "trainer.limit_test_batches=1"],
        output_dir=resumed_dir,
    )
    train(cfg, resumed_dir)
    assert seen["ckpt_path"] == str(resumed_dir / "checkpoints" / "last.ckpt")
    assert seen["weights_only"] is True, "no environment variable may turn safe loading off"
    whole = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    resumed = torch.load(resumed_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["epoch"] == whole["epoch"] == 1 and resumed["global_step"] == whole["global_step"]
    assert whole["state_dict"].keys() == resumed["state_dict"].keys()
    for name, tensor in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    for index, state in whole["optimizer_states"][0]["state"].items():
        for name, tensor in state.items():
            assert torch.equal(resumed["optimizer_states"][0]["state"][index][name], tensor), (index, name)
    assert resumed["callbacks"]["ValidationHistory"] == whole["callbacks"]["ValidationHistory"]
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


def test_a_run_in_bf16_true_precision_trains_and_tests(run_config):
    cfg, run_dir = run_config("experiment=quickstart", "trainer.precision=bf16-true", "trainer.max_epochs=1",
                              "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                              "trainer.limit_test_batches=1", "logger=none")  # fmt: skip
    rows = train(cfg, run_dir)
    assert {row["ood_dataset"] for row in rows} == {"digits-ood", "gaussian", "uniform"}


def test_pretrained_checkpoint_of_wrong_shape(run_config, tmp_path, monkeypatch):
    monkeypatch.setattr(pl.Trainer, "fit", lambda *a, **k: pytest.fail("training must not start"))
    wrong = tmp_path / "wrn-40-4.pt"
    torch.save(WideResNet(depth=40, widen_factor=4, drop_rate=0.0, n_outputs=1000).state_dict(), wrong)
    cfg, run_dir = run_config("experiment=quickstart", "backbone=wrn40-2", f"model.pretrained_checkpoint={wrong}")
    with pytest.raises(ConfigError) as error:
        train(cfg, run_dir)
    assert "\n" not in str(error.value)
    assert not (run_dir / "results.csv").exists()
