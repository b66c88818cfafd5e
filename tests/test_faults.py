"""Fault injection through the real command line: kill -9 and resume, two runs on one directory,
a sweep job whose process dies, a changed config on resume, damaged and crafted checkpoints,
a diverging loss. What needs processes (kills, a lock held by another run, a sweep) runs ``run.py``
in subprocesses, as a user would; a refused start runs its entry, ``mchad.cli.launch``, in this
process with stderr and the exit status captured, as the table of bad inputs does."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import wait_for

from mchad.cli.launch import launch
from mchad.train import train

ROOT = Path(__file__).resolve().parents[1]
METRIC_COLUMNS_EXCLUDED = ("run_dir",)
# three short epochs of the digits quickstart, one thread, testing the final weights (not the best
# epoch's, which a resume could get right by luck) on one batch of each test set; with dropout, so that
# training draws from the torch generator too (the data path draws from generators of its own), and a
# resume that lost its state gives other numbers
SHORT = [
    "experiment=quickstart",
    "seed=7",
    "model.backbone.drop_rate=0.3",
    "trainer.max_epochs=3",
    "threads=1",
    "test_checkpoint=current",
    "trainer.limit_test_batches=1",
]


def command(*args: str, script: str = "run.py") -> list[str]:
    return [sys.executable, str(ROOT / script), *args]


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(command(*args, f"paths.data_dir={tmp_path / 'data'}"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def run(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args, f"paths.data_dir={tmp_path / 'data'}"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def launch_run(tmp_path: Path, monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    """``run.py args`` in this process, from tmp_path: its exit status and its stderr lines."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        launch(train, "run", [*args, f"paths.data_dir={tmp_path / 'data'}"])
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def lock_holder(run_dir: Path) -> int | None:
    try:
        text = (run_dir / ".lock").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def metric_bytes(results: Path) -> str:
    """results.csv without the run_dir column, as text: what must match byte for byte."""
    table = pd.read_csv(results, dtype=str, keep_default_na=False)
    return table.drop(columns=list(METRIC_COLUMNS_EXCLUDED)).to_csv(index=False)


def logged_epochs(run_dir: Path) -> list[int]:
    """The epochs in the run's CSV log so far ([] before its first rows are written)."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.exists() or not path.stat().st_size:
        return []
    return [int(e) for e in pd.read_csv(path).epoch.dropna().unique()]


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("whole")
    result = run(tmp, *SHORT, f"hydra.run.dir={tmp / 'whole'}")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "whole"


def test_killed_twice_then_resumed_equals_the_uninterrupted_run(uninterrupted, tmp_path):
    run_dir = tmp_path / "killed"
    args = [*SHORT, f"hydra.run.dir={run_dir}"]
    # killed during the first epoch, before any checkpoint: the next start begins afresh
    first = start(tmp_path, *args)
    wait_for(lambda: lock_holder(run_dir) is not None, what="the run to take its lock")
    time.sleep(1.0)
    kill(first)
    # killed right after its first checkpoint (end of epoch 1 of 3)
    second = start(tmp_path, *args)
    # (and its CSV log of that epoch: rows Lightning had not yet flushed would be lost with the process)
    wait_for(
        lambda: (run_dir / "checkpoints" / "last.ckpt").exists() and logged_epochs(run_dir), what="the first checkpoint"
    )
    kill(second)
    assert not (run_dir / "results.csv").exists()
    epochs_before = logged_epochs(run_dir)
    # a writer killed between its temporary file and the rename leaves an orphan like this
    (run_dir / ".results.csv.dead.tmp").write_text("half")

    resumed = run(tmp_path, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    assert metric_bytes(run_dir / "results.csv") == metric_bytes(uninterrupted / "results.csv")
    assert not (run_dir / ".results.csv.dead.tmp").exists()
    # the CSV log goes on where it stopped: epoch 0 from before the kill, the rest after it
    epochs = logged_epochs(run_dir)
    assert 0 in epochs_before and sorted(epochs) == [0, 1, 2]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2, "last.ckpt holds the last completed epoch"


def test_results_are_readable_by_others(uninterrupted):
    mode = stat.S_IMODE((uninterrupted / "results.csv").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_provenance_records_what_decides_the_numbers(uninterrupted):
    import json

    record = json.loads((uninterrupted / "provenance.json").read_text())
    assert record["threads"] == 1 and record["device"] == "cpu" and record["seed"] == 7
    assert record["torch"] == torch.__version__ and record["deterministic"] is False
    assert "git_commit" in record or "package_version" in record
    assert record["wall_time_s"] > 0 and record["peak_host_memory_mb"] > 0
    assert torch.__version__.startswith(record["packages"]["torch"]) and record["packages"]["hydra-core"]


def test_a_second_run_on_a_busy_directory_fails_at_once_naming_the_first(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "busy"
    first = start(tmp_path, *SHORT, f"hydra.run.dir={run_dir}")
    try:
        wait_for(lambda: lock_holder(run_dir) is not None, what="the first run's lock")
        # the second start, in this process, while the first run's process holds the directory
        status, lines = launch_run(tmp_path, monkeypatch, capsys, *SHORT, f"hydra.run.dir={run_dir}")
        assert status == 2, lines
        assert len(lines) == 1 and f"in use by process {first.pid}" in lines[0]
    finally:
        kill(first)
    assert run_dir.is_dir(), "the refused run must not remove the directory of the one that holds it"


def records(run_dir: Path) -> dict[Path, int]:
    """Modification times of what a run recorded (the lock file is the holder's pid, not a record)."""
    return {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}


def test_resuming_or_skipping_with_another_config_is_refused_and_rewrites_nothing(
    uninterrupted, tmp_path, monkeypatch, capsys
):
    snapshot = records(uninterrupted)
    status, lines = launch_run(tmp_path, monkeypatch, capsys, *SHORT, "model.optimizer.lr=0.05",
                               f"hydra.run.dir={uninterrupted}")  # fmt: skip
    assert status == 2 and len(lines) == 1, lines
    assert "model.optimizer.lr: 0.003 -> 0.05" in lines[0] and "another directory" in lines[0]
    assert records(uninterrupted) == snapshot


def test_damaged_and_crafted_last_checkpoints_are_refused(uninterrupted, tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # the checks must not depend on torch's default

    for damage, expected in (("truncate", "truncated"), ("craft", "refused")):
        run_dir = tmp_path / damage
        shutil.copytree(uninterrupted, run_dir)
        (run_dir / "results.csv").unlink()
        last = run_dir / "checkpoints" / "last.ckpt"
        if damage == "truncate":
            last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
        else:
            marker = tmp_path / "pwned"

            class Exploit:
                def __reduce__(self):
                    return (Path.write_text, (marker, "pwned"))  # noqa: B023 (the marker of this case)

            torch.save({"state_dict": {}, "x": Exploit()}, last)
        status, lines = launch_run(tmp_path, monkeypatch, capsys, *SHORT, f"hydra.run.dir={run_dir}")
        assert status == 2 and len(lines) == 1 and expected in lines[0], lines
        assert not (run_dir / "results.csv").exists()
        assert not (tmp_path / "pwned").exists()


def test_a_diverging_loss_stops_with_one_line_and_no_results(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "nan"
    status, lines = launch_run(tmp_path, monkeypatch, capsys, *SHORT, "method.weight_center=1e308",
                               "method.weight_ce=1e308", f"hydra.run.dir={run_dir}")  # fmt: skip
    # training had started, so Lightning's start-up lines may come first; the error is the last line
    assert status == 2 and [line for line in lines if line.startswith("error: ")] == lines[-1:], lines
    assert not any("Traceback" in line for line in lines)
    assert "became inf at training step 0" in lines[-1] and "model.optimizer.lr" in lines[-1]
    assert not list(tmp_path.rglob("results.csv"))
    assert not run_dir.exists(), "a run that produced no checkpoint leaves no directory"
    logging.getLogger("mchad.after").warning("the process logs on")  # the removed run.log is not reopened
    assert not [h for h in logging.getLogger().handlers if str(run_dir) in str(getattr(h, "baseFilename", ""))]


def test_a_dying_sweep_job_fails_alone_and_a_rerun_finishes_only_it(tmp_path):
    job = ["threads=1", "test_checkpoint=current", "trainer.limit_test_batches=1", "trainer.max_epochs=1"]
    sweep = [
        "-m",
        "experiment=quickstart",
        "seed=1,2",
        *job,
        "tag=t",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    ]
    sweep_dir = tmp_path / "logs" / "multiruns" / "t" / "quickstart"
    rest = "test_checkpoint=current,threads=1,trainer.limit_test_batches=1,trainer.max_epochs=1"
    one, two = (sweep_dir / f"seed={seed},{rest}" for seed in (1, 2))
    process = start(tmp_path, *sweep)
    wait_for(lambda: lock_holder(one) is not None, what="the seed=1 job's process")
    time.sleep(2.0)
    os.kill(lock_holder(one), signal.SIGKILL)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 1, err[-3000:]
    assert "1 of 2 runs succeeded, 1 failed" in out
    assert "SIGKILL" in (one / "error.txt").read_text()
    assert (two / "results.csv").exists() and not (one / "results.csv").exists()
    finished = (two / "results.csv").stat().st_mtime_ns

    again = run(tmp_path, *sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 of 2 runs succeeded, 0 failed" in again.stdout
    assert (two / "results.csv").stat().st_mtime_ns == finished, "a finished job is skipped"
    # ... by the launcher's worker, without a child process that would import the training stack
    assert f"[mchad.cli.sweep][INFO] - {two / 'results.csv'} is complete, skipping" in (two / "run.log").read_text()
    assert (one / "results.csv").exists() and not (one / "error.txt").exists()

    # the same job as a single run, with the same threads, gives the same numbers
    single = run(tmp_path, "experiment=quickstart", "seed=2", *job, f"hydra.run.dir={tmp_path / 's'}")
    assert single.returncode == 0, single.stderr[-3000:]
    assert metric_bytes(tmp_path / "s" / "results.csv") == metric_bytes(two / "results.csv")
