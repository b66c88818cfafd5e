"""The command lines as a user types them: a sweep in which one job fails, DDP (one-line errors: test_bad_input.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow  # the fast suite has the same through a dying job: tests/test_faults.py
def test_sweep_with_a_failing_job_finishes_the_others_and_reruns_only_what_is_missing(tmp_path):
    common = [
        "-m",
        "experiment=quickstart",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks=none",
        "test_checkpoint=current",
        "tag=t",
    ]
    # n_embedding=0 fails (ConfigError inside the job); the two seeds with n_embedding=8 must still finish
    result = run(*common, "seed=1,2", "method.n_embedding=8,0", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 of 4 runs succeeded, 2 failed" in result.stdout
    sweep = tmp_path / "logs" / "multiruns" / "t" / "quickstart"
    done = sorted(p.parent.name for p in sweep.rglob("results.csv"))
    assert [d.split(",")[:2] for d in done] == [["method.n_embedding=8", "seed=1"], ["method.n_embedding=8", "seed=2"]]
    assert len(list(sweep.rglob("error.txt"))) == 2
    mtimes = {p: p.stat().st_mtime for p in sweep.rglob("results.csv")}

    again = run(*common, "seed=1,2", "method.n_embedding=8", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p: p.stat().st_mtime for p in sweep.rglob("results.csv")} == mtimes, "complete runs must be skipped"
    assert pd.read_csv(next(iter(mtimes))).shape[0] == 3


def test_ddp_trains_in_two_processes_and_tests_every_image_once(tmp_path):
    result = run(
        "experiment=quickstart",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks=none",
        "test_checkpoint=current",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [results] = list(tmp_path.rglob("results.csv"))
    table = pd.read_csv(results)
    assert (table.n_id == 361).all() and dict(zip(table.ood_dataset, table.n_ood)) == {
        "digits-ood": 714,
        "gaussian": 10_000,
        "uniform": 10_000,
    }
