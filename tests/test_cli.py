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
    # weight_center=1e308 diverges at the first step (a ConfigError only the job finds); the two seeds
    # with weight_center=1 must still finish
    result = run(*common, "seed=1,2", "method.weight_center=1,1e308", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 of 4 runs succeeded, 2 failed" in result.stdout
    sweep = tmp_path / "logs" / "multiruns" / "t" / "quickstart"
    done = sorted(p.parent.name for p in sweep.rglob("results.csv"))
    assert [d.split(",")[:2] for d in done] == [
        ["method.weight_center=1", "seed=1"],
        ["method.weight_center=1", "seed=2"],
    ]
    assert len(list(sweep.rglob("error.txt"))) == 2
    mtimes = {p: p.stat().st_mtime for p in sweep.rglob("results.csv")}

    again = run(*common, "seed=1,2", "method.weight_center=1", cwd=tmp_path)
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


def test_help_and_the_report_never_import_the_training_stack(tmp_path):
    """Every command's ``--help``, and ``mchad-report`` summarising a complete run, in one fresh process: no
    Lightning, no training module among its modules (what makes them start fast; bench/cli_start.py times it)."""
    from mchad.evaluation.results import RESULT_COLUMNS, write_results

    run_dir = tmp_path / "runs" / "seed=1"
    run_dir.mkdir(parents=True)
    row = dict.fromkeys(RESULT_COLUMNS, 0.5) | {"experiment": "quickstart", "method": "mchad", "dataset": "digits",
           "ood_dataset": "gaussian", "group": "far", "score": "distance", "seed": 1, "n_id": 60, "n_ood": 60,
           "epochs": 1, "debug": "", "run_dir": str(run_dir)}  # fmt: skip
    write_results([row], run_dir / "results.csv")
    calls = [
        ("train", "train_main", ["--help"]),
        ("train", "eval_main", ["--help"]),
        ("data", "main", ["--help"]),
        ("data", "main", ["prepare", "--help"]),
        ("report", "main", ["--help"]),
        ("report", "main", [str(tmp_path / "runs"), "--out", str(tmp_path / "report")]),
    ]
    script = f"""
import contextlib, importlib, io, sys
codes = []
for module, function, argv in {calls!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(getattr(importlib.import_module("mchad.cli." + module), function)(argv) or 0)
        except SystemExit as stop:
            codes.append(stop.code or 0)
print(codes)
print(sorted(m for m in ("pytorch_lightning", "lightning_fabric", "mchad.train", "mchad.module") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # every call succeeded: the report went as far as its tables (an empty folder stops it before them)
    assert result.stdout.strip().splitlines()[-2:] == [str([0] * len(calls)), "[]"], result.stdout
    assert (tmp_path / "report" / "summary.csv").is_file()


@pytest.mark.parametrize(("script", "name"), [("/venv/bin/mchad-train", "mchad-train"), ("run.py", "python run.py")])
def test_train_help_names_the_command_the_user_ran(script, name, monkeypatch, capsys):
    from mchad.cli.train import train_main

    monkeypatch.setattr(sys, "argv", [script])
    with pytest.raises(SystemExit) as stop:
        train_main(["--help"])
    assert stop.value.code in (0, None)
    assert capsys.readouterr().out.startswith(f"{name} is powered by Hydra.")


def test_flags_are_the_flags_of_hydras_own_parser():
    """mchad.cli.launch.Flags stands in for Hydra's private parser: the same options, the same choices."""
    from hydra._internal.utils import get_args_parser  # the private parser this test pins, never used in src/

    from mchad.cli.launch import Flags

    def options(parser):
        return {(tuple(sorted(a.option_strings)), tuple(a.choices or ())) for a in parser._actions if a.option_strings}

    assert options(Flags()) == options(get_args_parser())


def test_flags_go_anywhere_on_the_line():
    from mchad.cli.launch import Flags

    args = Flags().read(["experiment=quickstart", "--cfg", "job", "seed=2", "-m"])
    assert (args.cfg, args.multirun, args.overrides) == ("job", True, ["experiment=quickstart", "seed=2"])
