"""Self-contained checkpoints: a checkpoint carries its run's config, so it evaluates alone, anywhere."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from mchad.cli.launch import launch
from mchad.cli.train import eval_defaults, show_evaluation_config
from mchad.config import compose
from mchad.rundir import checkpoint_run_dir
from mchad.train import CHECKPOINT_CONFIG_KEY, EVALUATION_KEYS, evaluate_checkpoint, train

METRICS = ["ood_dataset", "score", "Accuracy", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95", "n_id", "n_ood"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A 1-epoch quickstart run of 2 batches, tested on a batch of each test set (digits, offline)."""
    tmp = tmp_path_factory.mktemp("short")
    run_dir = tmp / "run"
    overrides = ["experiment=quickstart", f"paths.data_dir={tmp / 'data'}", "trainer.max_epochs=1",
                 "trainer.limit_train_batches=2", "trainer.limit_test_batches=1", "logger=none"]  # fmt: skip
    train(compose(overrides, output_dir=run_dir), run_dir)
    return run_dir


def evaluate_alone(ckpt, tmp_path, monkeypatch, *overrides):
    """``mchad-eval ckpt_path=<ckpt> ...`` from an empty directory; the results table it wrote."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir(exist_ok=True)
    monkeypatch.chdir(workdir)
    launch(evaluate_checkpoint, "eval", [f"ckpt_path={ckpt}", "logger=none", *overrides], defaults=eval_defaults)
    [results] = (checkpoint_run_dir(ckpt) / "eval").rglob("results.csv")
    return pd.read_csv(results)


def test_every_checkpoint_carries_the_resolved_run_config(short_run):
    saved = OmegaConf.to_container(OmegaConf.load(short_run / "config.yaml"))
    for name in ("best.ckpt", "last.ckpt"):
        state = torch.load(short_run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert state[CHECKPOINT_CONFIG_KEY] == saved


def test_a_checkpoint_copied_alone_evaluates_to_the_metrics_of_its_run(short_run, tmp_path, monkeypatch):
    lonely = tmp_path / "lonely" / "best.ckpt"
    lonely.parent.mkdir()
    shutil.copy(short_run / "checkpoints" / "best.ckpt", lonely)
    # the default config (CIFAR-10, a pretrained file) is never read: that would fail offline here
    evaluated = evaluate_alone(lonely, tmp_path, monkeypatch)
    trained = pd.read_csv(short_run / "results.csv")
    pd.testing.assert_frame_equal(evaluated[METRICS], trained[METRICS])
    assert (evaluated.experiment == "quickstart").all() and (evaluated.epochs == trained.epochs).all()


def test_a_checkpoint_without_a_config_inside_reads_the_config_yaml_of_its_run(short_run, tmp_path, monkeypatch):
    """Checkpoints written before checkpoints carried their config."""
    run = tmp_path / "old-run"
    shutil.copytree(short_run, run)
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    del state[CHECKPOINT_CONFIG_KEY]
    torch.save(state, run / "checkpoints" / "best.ckpt")
    evaluated = evaluate_alone(run / "checkpoints" / "best.ckpt", tmp_path, monkeypatch)
    assert (evaluated.experiment == "quickstart").all() and set(evaluated.ood_dataset) == {"digits-ood", "gaussian",
                                                                                          "uniform"}  # fmt: skip
    [used] = (run / "eval").glob("*/config.yaml")
    used, saved = OmegaConf.load(used), OmegaConf.load(short_run / "config.yaml")
    assert (used.model, used.method, used.data) == (saved.model, saved.method, saved.data)


def test_cfg_job_with_a_checkpoint_prints_the_config_evaluation_uses(short_run, tmp_path, monkeypatch, capsys):
    lonely = tmp_path / "best.ckpt"
    shutil.copy(short_run / "checkpoints" / "best.ckpt", lonely)
    monkeypatch.chdir(tmp_path)
    assert show_evaluation_config(["--cfg", "job", f"ckpt_path={lonely}", "testsets=noise"])
    shown = OmegaConf.create(capsys.readouterr().out)
    saved = OmegaConf.load(short_run / "config.yaml")
    assert shown.name == "quickstart" and shown.method == saved.method and shown.data == saved.data
    assert [t.name for t in shown.testsets] == ["gaussian", "uniform"] and "hydra" not in shown
    assert shown.paths.output_dir.startswith(f"{tmp_path}/eval/")
    assert not show_evaluation_config(["--cfg", "job", "experiment=quickstart"]), "no checkpoint: Hydra prints"


def test_cfg_job_reads_the_flags_as_hydra_spells_them(short_run, tmp_path, monkeypatch, capsys):
    """Every spelling Hydra's parser takes: ``-cjob``, ``--package=KEY`` (``-p``), ``--resolve``, flags after overrides."""
    ckpt = short_run / "checkpoints" / "best.ckpt"
    monkeypatch.chdir(tmp_path)
    assert show_evaluation_config([f"ckpt_path={ckpt}", "-cjob", "--package=method", "--resolve"])
    assert OmegaConf.create(capsys.readouterr().out) == OmegaConf.load(short_run / "config.yaml").method
    assert show_evaluation_config(["-c", "all", "-p", "hydra.run", f"ckpt_path={ckpt}"])
    assert OmegaConf.create(capsys.readouterr().out).dir.startswith(f"{short_run}/eval/")
    for argv in (["--cfg=job", "--multirun"], ["-c", "hydra"], ["--cfg", "job", "--no-such-flag"]):
        assert not show_evaluation_config([*argv, f"ckpt_path={ckpt}"]), (
            f"{argv}: Hydra's, or the pre-flight's, to answer"
        )
    assert capsys.readouterr().out == ""


def test_cfg_job_reads_the_groups_of_config_dir_as_the_evaluation_does(short_run, tmp_path, monkeypatch, capsys):
    (tmp_path / "conf" / "testsets").mkdir(parents=True)
    (tmp_path / "conf" / "testsets" / "mine.yaml").write_text("# @package testsets\n- {name: uniform, label: mine}\n")
    monkeypatch.chdir(tmp_path)
    ckpt = short_run / "checkpoints" / "best.ckpt"
    assert show_evaluation_config(["--cfg", "job", "--config-dir", str(tmp_path / "conf"), f"ckpt_path={ckpt}",
                                   "testsets=mine"])  # fmt: skip
    assert [t.label for t in OmegaConf.create(capsys.readouterr().out).testsets] == ["mine"]


def test_cfg_job_refuses_an_override_that_changes_the_model_in_one_line(short_run, capsys):
    ckpt = short_run / "checkpoints" / "best.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        show_evaluation_config(["--cfg", "job", f"ckpt_path={ckpt}", "method.margin=3"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert line.startswith("error: method.margin would change the model") and "from the checkpoint" in line


def test_eval_help_describes_evaluation_and_every_key_it_may_change(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        launch(evaluate_checkpoint, "eval", ["--help"], defaults=eval_defaults)
    assert exit_info.value.code == 0
    page = capsys.readouterr().out
    assert "ckpt_path is required" in page and "mchad-eval ckpt_path=RUN/checkpoints/best.ckpt" in page
    for key in EVALUATION_KEYS:
        assert key.split(".")[-1] in page, key
    assert "== Config ==" not in page, "the training help (every key of the default config) is not shown"
