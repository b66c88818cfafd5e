"""Hyperparameter search: ``python run.py -m hparams_search=...`` through this project's Optuna sweeper.

End to end (a subprocess, tiny trials): the study in ``<sweep dir>/optuna.db`` holds the
trials with the validation objective the runs logged, ``best_params.yaml`` takes the best
trial back to ``run.py``, and a second invocation continues the study (job directories are
never reused). In process: bad search spaces end with one ``error:`` line and exit status 2
before anything is made, a search killed mid-trial is continued without counting the
interrupted trial, and the search space merges the config's and the command line's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from mchad.cli.launch import launch
from mchad.config import compose
from mchad.errors import command
from mchad.train import train

optuna = pytest.importorskip("optuna")

from hydra_plugins.mchad_optuna_sweeper._search import parse_search_space, search_lock  # noqa: E402
from hydra_plugins.mchad_optuna_sweeper.sweeper import MchadOptunaSweeper  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMPLETE = optuna.trial.TrialState.COMPLETE

# a trial of a few seconds: one epoch of 2 batches, one batch per validation and test set, CSV log only
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.eval_batch_size=64",
    "~logger.tensorboard",
    "~callbacks.progress_bar",
    "~callbacks.lr_monitor",
]


def search(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python run.py -m hparams_search=quickstart`` with tiny trials, data, logs and the sweep under tmp_path."""
    paths = [
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={tmp_path / 'search'}",
    ]
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "-m", "hparams_search=quickstart", *paths, *TINY, *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )


def load(sweep_dir: Path):
    return optuna.load_study(study_name="quickstart", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def check_first_search(tmp_path: Path, first: subprocess.CompletedProcess, n_trials: int) -> None:
    """The study holds ``n_trials`` complete trials whose values are the runs' logged validation accuracy, and
    best_params.yaml takes the best one back to run.py."""
    sweep_dir = tmp_path / "search"
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    study = load(sweep_dir)
    assert [t.state for t in study.trials] == [COMPLETE] * n_trials
    for trial in study.trials:
        run_dir = sweep_dir / f"trial_{trial.number}"
        assert trial.user_attrs["run_dir"] == str(run_dir)
        # the objective is the validation accuracy the run logged (best epoch = the tested weights; one epoch here)
        logged = pd.read_csv(run_dir / "csv" / "metrics.csv")["Accuracy/val"].dropna()
        assert len(logged) == 1 and trial.value == pytest.approx(logged.max(), rel=1e-7, abs=0)
        # never a test-set number: the OOD test sets are only in results.csv, which the objective does not read
        assert "Accuracy/test" not in trial.user_attrs["validation"]
        saved = OmegaConf.load(run_dir / "config.yaml")  # the run trained with the values Optuna chose
        assert saved.model.optimizer.lr == trial.params["model.optimizer.lr"]
        assert saved.method.margin == trial.params["method.margin"]
        assert saved.trainer.max_epochs == 1 and saved.name == "quickstart"

    best_file = sweep_dir / "best_params.yaml"
    best = yaml.safe_load(best_file.read_text())
    assert (best["trial"], best["value"], best["params"]) == (
        study.best_trial.number,
        study.best_value,
        study.best_params,
    )
    assert f"best parameters: {best_file}" in first.stdout
    assert f"Accuracy/val = {study.best_value:.6g}" in first.stdout
    # run.py takes the overrides back: they compose to the best trial's config
    again = compose(best["overrides"], output_dir=tmp_path / "again")
    assert again.model.optimizer.lr == study.best_params["model.optimizer.lr"]
    assert again.method.margin == study.best_params["method.margin"]
    assert "python run.py hparams_search=quickstart" in best_file.read_text()


@pytest.mark.slow  # a real search of one trial, about 50 s; make test-slow
def test_search_reports_the_validation_objective_and_writes_best_params(tmp_path):
    check_first_search(tmp_path, search(tmp_path, "hydra.sweeper.n_trials=1"), n_trials=1)


@pytest.mark.slow
def test_search_started_again_continues_the_study(tmp_path):
    """2 trials, then the same command with n_trials=3: one more trial, trial_2, and nothing rewritten."""
    sweep_dir = tmp_path / "search"
    check_first_search(tmp_path, search(tmp_path, "hydra.sweeper.n_trials=2"), n_trials=2)
    written = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("trial_*/*.*") if p.is_file()}
    second = search(tmp_path, "hydra.sweeper.n_trials=3")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    study = load(sweep_dir)
    assert [(t.number, t.state) for t in study.trials] == [(0, COMPLETE), (1, COMPLETE), (2, COMPLETE)]
    assert sorted(p.name for p in sweep_dir.glob("trial_*")) == ["trial_0", "trial_1", "trial_2"]
    assert {p: p.stat().st_mtime_ns for p in written} == written, "a job directory of the first search was rewritten"
    assert (sweep_dir / "trial_2" / "results.csv").exists()
    assert "3 trials: 3 complete, 0 failed" in second.stdout


BAD_SPACES = [
    (["method.margin=interval(8,1)"], "is not below its high end"),
    (["model.optimizer.lr=tag(log,interval(0,0.1))"], "log-scale interval needs a low end > 0"),
    (["model.optimizer.lr=interval(-0.1,0.1)"], "model.optimizer.lr=-0.1 must be greater than 0"),
    (["method.n_embedding=interval(8,64)"], "is not an integer"),
    (["method.margn=interval(1,8)"], "method.margn, which is not a key of this config"),
    (["method.weight_oe=interval(0.1,1)"], "which trains with outliers, but data.outliers is null"),
    (["method.margin=tag(sqrt,interval(1,8))"], "unknown tag sqrt"),
    (["method.weight_center=choice(1.0,-1.0)"], "reaches method.weight_center=-1.0"),
    (["hydra.sweeper.objective=distance/AUROC/test"], "is not a validation metric"),
    (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0 must be at least 1: use a whole number >= 1, e.g."),
    (["hydra.sweeper.direction=up"], "hydra.sweeper.direction='up' must be 'maximize' or 'minimize'"),
    (["hydra.sweeper.sampler._target_=optuna.samplers.NoSampler"], "NoSampler cannot be imported: name an Optuna"),
    (["hydra.sweeper.sampler._target_=optuna.study.Study"], "optuna.study.Study is not an Optuna sampler"),
    (
        ["+hydra.sweeper.sampler.n_startup=3"],
        "TPESampler refuses the arguments {'constant_liar': True, 'n_startup': 3}",
    ),
    (["+hydra.sweeper.sampler.seed=3"], "hydra.sweeper.sampler.seed=3 is set twice"),
    (["model.optimizer.lr=0.001", "method.margin=2.0"], "has nothing to search"),
    (["hydra.sweep.subdir=trials"], "does not hold the job number"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_SPACES, ids=[e.split()[0] for _, e in BAD_SPACES])
def test_bad_search_space_is_one_line_exit_2(overrides, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    # tiny trials, so that a search space the checks let through costs seconds, not the test run
    argv = [
        "-m",
        "hparams_search=quickstart",
        f"paths.data_dir={tmp_path / 'data'}",
        "hydra.sweeper.n_trials=1",
        *TINY,
        *overrides,
    ]
    with pytest.raises(SystemExit) as exit_info:
        launch(train, "run", argv)
    stderr = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, stderr
    assert len(stderr) == 1 and stderr[0].startswith("error: ") and expected in stderr[0], stderr
    assert not (tmp_path / "logs").exists()


class FakeLauncher:
    """Returns what run_sweep_job would, a validation accuracy per job from ``values`` (None: a failed job)."""

    def __init__(self, sweep_dir: Path, values: list[float | None]) -> None:
        self.sweep_dir, self.values, self.calls = sweep_dir, iter(values), []

    def launch(self, batch, initial_job_idx):
        self.calls.append((initial_job_idx, len(batch)))
        jobs = []
        for number, overrides in enumerate(batch, start=initial_job_idx):
            value = next(self.values)
            run_dir = str(self.sweep_dir / f"trial_{number}")
            returned = None if value is None else {"results": [], "validation": {"Accuracy/val": value}}
            jobs.append(
                JobReturn(
                    overrides=overrides,
                    status=JobStatus.COMPLETED,
                    _return_value=returned,
                    hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": run_dir}}}),
                )
            )
        return jobs


def sweeper_for(sweep_dir: Path, values: list[float | None], n_trials: int, n_jobs: int) -> MchadOptunaSweeper:
    sweeper = MchadOptunaSweeper(
        objective="Accuracy/val",
        direction="maximize",
        study_name="quickstart",
        storage=None,
        n_trials=n_trials,
        n_jobs=n_jobs,
        sampler={"_target_": "optuna.samplers.TPESampler"},
        seed=0,
        params={"method.margin": "interval(1, 8)"},
    )
    sweeper.config = OmegaConf.create({"hydra": {"runtime": {"choices": {"experiment": "quickstart"}}}})
    sweeper.launcher = FakeLauncher(sweep_dir, values)
    sweeper.validate_batch_is_legal = lambda batch: None
    return sweeper


def test_trials_are_numbered_on_across_invocations_and_failures_count(tmp_path):
    space = parse_search_space({"method.margin": "interval(1, 8)"}, ["hparams_search=quickstart"])
    first = sweeper_for(tmp_path, [0.5, None, 0.7], n_trials=3, n_jobs=2)
    study = first.load_study(optuna, tmp_path)
    first.run_trials(optuna, study, space)
    assert first.launcher.calls == [(0, 2), (2, 1)]  # job number = trial number, batches of n_jobs
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert "no validation metrics" in study.trials[1].user_attrs["failure"]

    second = sweeper_for(tmp_path, [0.9, 0.1], n_trials=5, n_jobs=2)
    study = second.load_study(optuna, tmp_path)
    second.run_trials(optuna, study, space)
    assert second.launcher.calls == [(3, 2)]  # n_trials is the study's total: two more, numbered on
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert study.trials[3].user_attrs["run_dir"] == str(tmp_path / "trial_3")
    second.report(optuna, study, tmp_path)
    best = yaml.safe_load((tmp_path / "best_params.yaml").read_text())
    assert (best["trial"], best["value"]) == (3, 0.9)
    assert best["overrides"] == [
        "hparams_search=quickstart",
        f"method.margin={study.trials[3].params['method.margin']!r}",
    ]
    # the command the user ran: mchad-train here (pytest); python run.py from a checkout (test above)
    assert f"{command('train')} experiment=quickstart method.margin=" in (tmp_path / "best_params.yaml").read_text()


def bare_sweeper(study_name: str) -> MchadOptunaSweeper:
    return MchadOptunaSweeper(
        objective="Accuracy/val", direction="maximize", study_name=study_name, storage=None,
        n_trials=2, n_jobs=1, sampler={"_target_": "optuna.samplers.TPESampler"}, seed=0, params={},
    )  # fmt: skip


def test_nested_and_dotted_search_spaces_are_one_space():
    """``params: {method: {margin: ...}}`` (yaml nesting) and ``params: {method.margin: ...}`` name the same key."""
    nested = parse_search_space({"method": {"margin": "interval(1, 8)"}, "seed": "choice(1, 2)"}, [])
    dotted = parse_search_space({"method.margin": "interval(1, 8)", "seed": "choice(1, 2)"}, [])
    assert nested == dotted and nested.keys == {"method.margin": "method.margin", "seed": "seed"}


def test_a_killed_search_continues_without_counting_the_interrupted_trial(tmp_path):
    sweep_dir = tmp_path / "search"
    sweep_dir.mkdir()
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    old = optuna.create_study(storage=storage, study_name="quickstart", direction="maximize")
    space = parse_search_space({"method.margin": "interval(1, 8)"}, [])
    done = old.ask(space.distributions)  # reported by its job
    done.set_user_attr("run_dir", str(sweep_dir / "trial_0"))
    old.tell(done, 0.5)
    old.ask(space.distributions)  # the search was killed while this trial ran

    sweeper = bare_sweeper("quickstart")
    study = sweeper.load_study(optuna, sweep_dir)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL"]
    assert [t.number for t in sweeper.counted(optuna, study)] == [0]  # one more trial to run, as trial 2

    other = bare_sweeper("other")
    with pytest.raises(SystemExit):  # a second study in the same sweep directory would reuse trial_<n>
        other.load_study(optuna, sweep_dir)


def test_one_search_at_a_time_per_sweep_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with search_lock(tmp_path), pytest.raises(SystemExit) as exit_info, search_lock(tmp_path):
        pass
    assert exit_info.value.code == 2
    assert f"is running in process {os.getpid()}" in capsys.readouterr().err


def test_the_search_ends_bad_input_as_the_commands_do(tmp_path, capsys, monkeypatch):
    """The sweeper's refusals go through the commands' own ``fail``: with ``HYDRA_FULL_ERROR=1``, the
    traceback, then the one ``error:`` line, status 2 (docs/cli.md)."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with search_lock(tmp_path), pytest.raises(SystemExit) as exit_info, search_lock(tmp_path):
        pass
    stderr = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert stderr[0] == "Traceback (most recent call last):", stderr
    assert stderr[-1].startswith(f"error: the hyperparameter search in {tmp_path} is running in process {os.getpid()}:")


def test_command_line_adds_to_replaces_and_fixes_the_search_space():
    params = {
        "method": {"margin": "interval(1, 8)"},
        "model.optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
        "method.n_embedding": "choice(8, 16)",
    }
    space = parse_search_space(
        params,
        ["experiment=quickstart", "method.margin=4.0", "seed=range(1,4)", "model.optimizer.lr=interval(0.001,0.002)"],
    )
    assert sorted(space.distributions) == ["method.n_embedding", "model.optimizer.lr", "seed"]
    assert space.distributions["seed"] == optuna.distributions.IntDistribution(1, 3)  # range() excludes its stop
    assert space.distributions["model.optimizer.lr"] == optuna.distributions.FloatDistribution(0.001, 0.002)
    assert space.overrides({"method.n_embedding": 16, "model.optimizer.lr": 0.0015, "seed": 2}) == [
        "experiment=quickstart",
        "method.margin=4.0",
        "model.optimizer.lr=0.0015",
        "method.n_embedding=16",
        "seed=2",
    ]


def test_a_continued_study_draws_new_points_not_its_first_ones_again(tmp_path):
    """Same seed, second invocation: the sampler is seeded with seed + trials held, so the new trials are not a
    replay of trials 0-2 (TPE's first 10 trials are random draws from its seeded generator)."""
    space = parse_search_space({"method.margin": "interval(1, 8)"}, [])
    first = sweeper_for(tmp_path, [0.5, 0.6, 0.7], n_trials=3, n_jobs=1)
    first.run_trials(optuna, first.load_study(optuna, tmp_path), space)
    second = sweeper_for(tmp_path, [0.1, 0.2, 0.3], n_trials=6, n_jobs=1)
    study = second.load_study(optuna, tmp_path)
    second.run_trials(optuna, study, space)
    margins = [t.params["method.margin"] for t in study.trials]
    assert len(margins) == 6 and len(set(margins)) == 6, margins
    # and the seed does decide the draws: a fresh study with the same seed replays the first invocation
    fresh = sweeper_for(tmp_path / "fresh", [0.5, 0.6, 0.7], n_trials=3, n_jobs=1)
    (tmp_path / "fresh").mkdir()
    replay = fresh.load_study(optuna, tmp_path / "fresh")
    fresh.run_trials(optuna, replay, space)
    assert [t.params["method.margin"] for t in replay.trials] == margins[:3]


def test_the_searches_maximize_and_report_the_largest_value(tmp_path):
    """hparams_search/_common.yaml's direction reaches the study: the best trial is the one with the largest
    validation accuracy, in the study and in best_params.yaml."""
    cfg = compose(["hparams_search=quickstart"], output_dir=tmp_path)
    sweeper = MchadOptunaSweeper(**{k: v for k, v in cfg.hydra.sweeper.items() if not k.startswith("_")})
    assert sweeper.settings.direction == "maximize"
    sweeper.config = cfg
    sweeper.launcher = FakeLauncher(tmp_path, [0.3, 0.9, 0.1, 0.5])
    sweeper.validate_batch_is_legal = lambda batch: None
    sweeper.settings.n_trials = 4
    study = sweeper.load_study(optuna, tmp_path)
    sweeper.run_trials(optuna, study, parse_search_space(sweeper.settings.params, []))
    sweeper.report(optuna, study, tmp_path)
    best = yaml.safe_load((tmp_path / "best_params.yaml").read_text())
    assert (study.best_trial.number, study.best_value) == (1, 0.9)
    assert (best["trial"], best["value"], best["direction"]) == (1, 0.9, "maximize")
