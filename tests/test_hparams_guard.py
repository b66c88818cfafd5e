"""What a hyperparameter search hands back, checked against the trials' own logs: the best trial is the one
with the highest validation objective (a search maximises it), and a continued study draws new values
instead of replaying its first trials'.

Only the search's public results are read: ``best_params.yaml``, the runs' ``metrics.csv`` and the study
in ``<sweep dir>/optuna.db`` through Optuna's API. The search runs in process through ``mchad.cli.launch``
(what ``run.py -m`` calls); its trials are real runs of a few training steps, each in its own process.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from mchad.cli.launch import launch
from mchad.train import train

optuna = pytest.importorskip("optuna")

# a trial of a few seconds: two training batches, one validation batch, no test, CSV log only
TRIAL = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "data.eval_batch_size=64",
    "test=false",
    "~logger.tensorboard",
    "~callbacks.progress_bar",
    "~callbacks.lr_monitor",
]
# a continuous objective (a tie would hide the direction), and a fixed seed: the case where a
# continued study could replay its draws
SEARCH = ["hydra.sweeper.objective=distance/AUROC/val", "hydra.sweeper.seed=0"]


def search(tmp_path: Path, n_trials: int) -> None:
    launch(
        train,
        "run",
        [
            "-m",
            "hparams_search=quickstart",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"hydra.sweep.dir={tmp_path / 'search'}",
            f"hydra.sweeper.n_trials={n_trials}",
            *TRIAL,
            *SEARCH,
        ],
    )


def logged_objective(run_dir: Path) -> float:
    """The objective as the trial's run logged it (one validation epoch)."""
    [value] = pd.read_csv(run_dir / "csv" / "metrics.csv")["distance/AUROC/val"].dropna().tolist()
    return value


def test_the_best_trial_has_the_highest_objective_and_a_continued_study_draws_anew(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("MCHAD_ROOT", "MCHAD_SWEEP_ID"):  # launch sets them for its workers; restored afterwards
        monkeypatch.setenv(name, "")
    sweep_dir = tmp_path / "search"
    search(tmp_path, n_trials=1)
    search(tmp_path, n_trials=2)  # the same command, one trial more: the study is continued

    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [t.number for t in study.trials] == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    objective = {t.number: logged_objective(sweep_dir / f"trial_{t.number}") for t in study.trials}
    assert {t.number: t.value for t in study.trials} == pytest.approx(objective, rel=1e-7, abs=0)

    # the continued invocation, with the same seed, drew values of its own rather than the first trial's again
    first, continued = (t.params for t in study.trials)
    for name, value in continued.items():
        assert value != first[name], (name, first, continued)

    assert len(set(objective.values())) == 2, f"the case this test needs, two different values: {objective}"

    # the search maximises: the best trial is the one with the highest validation AUROC
    highest = max(objective, key=objective.get)
    best = yaml.safe_load((sweep_dir / "best_params.yaml").read_text())
    assert best["trial"] == highest and best["value"] == pytest.approx(objective[highest], rel=1e-7, abs=0)
    assert best["params"] == study.trials[highest].params
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
