"""Seed sweeps through the joblib and Ray launchers, re-runs after failed and killed jobs, and the sweep scripts.

The basic launcher's failing-job sweep is in test_cli.py; here the same contract (failed jobs
write error.txt, the others finish, one summary line, exit status 1) is checked where the jobs
run in other processes, together with what a re-run does: finished runs are skipped, a run
with ``checkpoints/last.ckpt`` and no ``results.csv`` (killed) resumes from its checkpoint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mchad.config import compose

ROOT = Path(__file__).resolve().parents[1]

# a quickstart run of a few seconds: one epoch of at most 5 batches, 2 batches of 128 per val and test set
QUICK = [
    "experiment=quickstart",
    "debug=limit",
    "trainer.max_epochs=1",
    "data.eval_batch_size=128",
    "logger=none",
    "test_checkpoint=current",
    "tag=t",
]
# keep the checkpoint callback (resuming needs last.ckpt); the others want a logger or a terminal
CHECKPOINTS_ONLY = ["~callbacks.progress_bar", "~callbacks.lr_monitor"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
# a job that only its run can find failing (every job's config is checked before the sweep starts):
# a center-loss weight of 1e308 makes the loss infinite at the first training step
DIVERGING = "method.weight_center=1,1e308"

PAPER_DATASETS = ["cifar10", "cifar100", "svhn"]
PAPER_METHODS = ["mchad", "gmchad", "cac", "gcac", "center", "gcenter", "ii"]


def sweep(tmp_path: Path, *overrides: str, base: list[str] = QUICK) -> subprocess.CompletedProcess:
    """``python run.py -m`` from tmp_path, with data and logs under tmp_path (``base``: the quick settings)."""
    paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}"]
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "-m", *base, *paths, *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAY_DEDUP_LOGS": "0"},
    )


def run_dirs(tmp_path: Path) -> dict[str, Path]:
    """The sweep's run directories by name (the overrides that tell them apart)."""
    return {p.name: p for p in (tmp_path / "logs" / "multiruns" / "t" / "quickstart").iterdir()}


def named(dirs: dict[str, Path], *parts: str) -> Path:
    """The one run directory whose name holds every one of ``parts``."""
    (match,) = [path for name, path in dirs.items() if all(part in name.split(",") for part in parts)]
    return match


def check_report(sweep_dir: Path, out: Path) -> None:
    """``mchad-report`` over the sweep: one quickstart row of two seeds, whose numbers are recomputed
    here from the runs' results.csv (percent, mean over OOD sets per run, then mean and std over runs)."""
    # the runs are debug=limit smoke tests, which a report leaves out unless asked
    command = [sys.executable, "-m", "mchad.cli.report", str(sweep_dir), "--out", str(out), "--include-debug"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 1, summary
    row = summary.iloc[0]
    assert (row["dataset"], row["method"], row["n_seeds"]) == ("digits", "mchad", 2)
    raw = pd.concat([pd.read_csv(path) for path in sweep_dir.rglob("results.csv")])
    # debug=limit tests 2 batches of 128 per set: 256 of the 361 ID and of every OOD set's images
    assert set(raw["n_id"]) == {256} and set(raw["n_ood"]) == {256}
    assert sorted(raw["ood_dataset"].unique()) == ["digits-ood", "gaussian", "uniform"]
    per_run = raw.groupby("run_dir")[["Accuracy", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95"]].mean() * 100
    assert len(per_run) == 2
    for metric, values in per_run.items():
        # summary.csv keeps two decimals
        assert row[f"{metric}_mean"] == pytest.approx(values.mean(), abs=0.006), metric
        assert row[f"{metric}_std"] == pytest.approx(values.std(), abs=0.006), metric


def check_failed_sweep(result: subprocess.CompletedProcess, tmp_path: Path) -> dict[str, Path]:
    """The sweep over seed=1,2 x method.weight_center=1,1e308 (:data:`DIVERGING`): the two 1e308 jobs fail alone."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "sweep finished: 2 of 4 runs succeeded, 2 failed" in result.stdout
    dirs = run_dirs(tmp_path)
    for seed in ("seed=1", "seed=2"):
        assert (named(dirs, "method.weight_center=1", seed) / "results.csv").is_file()
        failed = named(dirs, "method.weight_center=1e+308", seed)  # Hydra writes the float so
        assert "'center' became inf" in (failed / "error.txt").read_text() and not (failed / "results.csv").exists()
    return dirs


def test_ray_sweep_finishes_around_a_failing_job_and_reports(tmp_path):
    """A 2-seed quickstart sweep through a private local Ray (about 30-80 s on 2 cores)."""
    result = sweep(tmp_path, "hydra/launcher=ray_local", "callbacks=none", "seed=1,2", DIVERGING)
    check_failed_sweep(result, tmp_path)
    check_report(tmp_path / "logs" / "multiruns" / "t", tmp_path / "report")


@pytest.mark.slow  # the fast suite sweeps with joblib in tests/test_faults.py (a dying job, rerun, skip)
def test_joblib_sweep_then_rerun_skips_finished_runs_and_resumes_killed_ones(tmp_path):
    dirs = check_failed_sweep(sweep(tmp_path, *JOBLIB, *CHECKPOINTS_ONLY, "seed=1,2", DIVERGING), tmp_path)
    check_report(tmp_path / "logs" / "multiruns" / "t", tmp_path / "report")
    finished = {seed: named(dirs, "method.weight_center=1", f"seed={seed}") / "results.csv" for seed in (1, 2)}
    mtimes = {seed: path.stat().st_mtime_ns for seed, path in finished.items()}
    # seed 3 "was killed": its run directory holds a last.ckpt (seed 1's weights) and no results.csv
    killed = finished[1].parent.with_name(finished[1].parent.name.replace("seed=1", "seed=3"))
    shutil.copytree(finished[1].parent / "checkpoints", killed / "checkpoints")

    # the launcher is not part of a run's directory name: the basic launcher picks up the joblib sweep
    again = sweep(tmp_path, *CHECKPOINTS_ONLY, "seed=1,2,3", "method.weight_center=1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "sweep finished: 3 of 3 runs succeeded, 0 failed" in again.stdout
    assert {seed: path.stat().st_mtime_ns for seed, path in finished.items()} == mtimes, "finished runs must be skipped"
    assert f"resuming from {killed / 'checkpoints' / 'last.ckpt'}" in (killed / "run.log").read_text()
    resumed, original = pd.read_csv(killed / "results.csv"), pd.read_csv(finished[1])
    # tested with the weights of the checkpoint it resumed from, not retrained from scratch
    assert (resumed["seed"] == 3).all() and resumed["Accuracy"].tolist() == original["Accuracy"].tolist()


@pytest.mark.parametrize(
    ("launcher", "expected"),
    [
        ("ray_local", {"address": "local", "object_store_memory": 200_000_000, "include_dashboard": False}),
        ("ray_cluster", {"address": "auto", "object_store_memory": None}),
    ],
)
def test_ray_launcher_configs(launcher, expected):
    cfg = compose(["experiment=quickstart", f"hydra/launcher={launcher}"])
    ray = cfg.hydra.launcher.ray
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert {key: ray.init[key] for key in expected} == expected
    assert ray.init.runtime_env.env_vars.RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO == "1"
    assert {"num_cpus", "num_gpus"} <= set(ray.remote)


def script(name: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "bash" / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def commands(stdout: str) -> list[str]:
    return [line.removeprefix("+ ") for line in stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("name", ["run-experiments.sh", "run-ablation.sh"])
def test_scripts_parse(name):
    assert subprocess.run(["bash", "-n", str(ROOT / "bash" / name)]).returncode == 0


def test_run_experiments_dry_run_prints_one_seed_sweep_per_dataset_and_method(tmp_path):
    result = script("run-experiments.sh", "3", "hydra/launcher=ray_local", "trainer=gpu", cwd=tmp_path, DRY_RUN="1")
    assert result.returncode == 0, result.stderr
    python = ".venv/bin/python" if (ROOT / ".venv/bin/python").exists() else "python3"
    assert commands(result.stdout) == [
        f"{python} run.py -m experiment={d}-{m} tag=paper 'seed=range(1,4)' hydra/launcher=ray_local trainer=gpu"
        for d in PAPER_DATASETS
        for m in PAPER_METHODS
    ]
    assert result.stdout.splitlines()[-1] == "dry run: 21 sweeps"
    assert not list(tmp_path.iterdir()), "a dry run writes nothing"


def test_run_ablation_dry_run_prints_the_ablation_sweeps(tmp_path):
    result = script("run-ablation.sh", cwd=tmp_path, DRY_RUN="1", SEEDS="2", PYTHON="python")
    assert result.returncode == 0, result.stderr
    base = "python run.py -m experiment=cifar10-gmchad tag=ablation"
    assert commands(result.stdout) == [
        f"{base}{variant} 'seed=range(1,3)'"
        for variant in (
            "",
            " method.weight_center=0",
            " method.weight_ce=0",
            " method.weight_oe=0",
            " method.margin=1,2,8,16",
            " method.radius=0.5,1,2,4",
        )
    ]


def test_run_experiments_goes_on_after_a_failed_sweep_and_lists_it(tmp_path):
    # a stand-in for python: records its arguments, and "fails" the CAC sweep
    fake = tmp_path / "fake-python"
    calls = tmp_path / "calls.txt"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n[[ "$*" != *experiment=cifar10-cac* ]]\n')
    fake.chmod(0o755)
    result = script(
        "run-experiments.sh", "2", "x=1", cwd=tmp_path, PYTHON=str(fake), DATASETS="cifar10", METHODS="mchad cac ii"
    )
    assert result.returncode == 1
    assert calls.read_text().splitlines() == [
        f"run.py -m experiment=cifar10-{m} tag=paper seed=range(1,3) x=1" for m in ("mchad", "cac", "ii")
    ]
    assert "1 of 3 sweeps had failures: cifar10-cac" in result.stdout


def test_scripts_reject_a_bad_seed_count(tmp_path):
    result = script("run-ablation.sh", cwd=tmp_path, DRY_RUN="1", SEEDS="six")
    assert result.returncode == 2 and "SEEDS=six is not a positive integer" in result.stderr


def test_a_finished_job_is_read_in_the_worker_unless_its_config_changed(tmp_path):
    """What lets a re-run skip a finished job without a child process: complete results and the same fingerprint."""
    from mchad import rundir
    from mchad.cli.sweep import finished_results
    from mchad.evaluation.results import RESULT_COLUMNS, RESULTS_FILE, write_results

    cfg = compose(["experiment=quickstart", "seed=3"], output_dir=tmp_path)
    row = dict.fromkeys(RESULT_COLUMNS, 0.5) | {"experiment": "quickstart", "method": "mchad", "dataset": "digits",
           "ood_dataset": "gaussian", "group": "far", "score": "distance", "seed": 3, "n_id": 60, "n_ood": 60,
           "epochs": 1, "debug": "", "run_dir": str(tmp_path)}  # fmt: skip
    assert finished_results(cfg, tmp_path) is None  # nothing there: the child starts the run
    rundir.check_fingerprint(tmp_path, cfg)  # what the run's first start records
    (tmp_path / RESULTS_FILE).write_text("experiment\n")  # killed while writing: the child resumes it
    assert finished_results(cfg, tmp_path) is None
    write_results([row], tmp_path / RESULTS_FILE)
    assert finished_results(cfg, tmp_path) == [row]
    # another config in the same directory: the child refuses it, naming the keys
    assert finished_results(compose(["experiment=quickstart", "seed=4"], output_dir=tmp_path), tmp_path) is None
