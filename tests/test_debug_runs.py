"""Smoke-test runs (``debug=fdr|limit|overfit``) are marked in results.csv and left out of reports unless asked."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from mchad.cli.report import main as report_main
from mchad.config import compose
from mchad.evaluation.results import read_results, write_results
from mchad.report.runs import COMPLETE, DEBUG, find_runs, load_results
from mchad.train import train


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    """A real quickstart run with debug=fdr (one batch of each stage)."""
    tmp = tmp_path_factory.mktemp("debug")
    run_dir = tmp / "runs" / "fdr"
    cfg = compose(["experiment=quickstart", "debug=fdr", f"paths.data_dir={tmp / 'data'}", "logger=none"],
                  output_dir=run_dir)  # fmt: skip
    train(cfg, run_dir)
    return run_dir


def real_run(run_dir, debug_run):
    """A copy of the debug run marked as a real run (the report's statistics need no real training)."""
    shutil.copytree(debug_run, run_dir)
    rows = read_results(debug_run / "results.csv").assign(debug="", run_dir=str(run_dir)).to_dict("records")
    write_results(rows, run_dir / "results.csv")
    return run_dir


@pytest.mark.parametrize("option", ["fdr", "limit", "overfit"])
def test_each_debug_option_names_itself(option):
    assert compose([f"debug={option}"]).debug == option
    assert compose([]).debug is None


def test_a_debug_run_is_marked_in_results_csv(debug_run):
    results = pd.read_csv(debug_run / "results.csv", keep_default_na=False)
    assert len(results) and (results.debug == "fdr").all()


def test_the_report_leaves_debug_runs_out_unless_asked(debug_run, tmp_path, capsys):
    root = debug_run.parent
    real = real_run(root / "real", debug_run)
    runs = find_runs(root).set_index("run_dir")
    assert runs.status.to_dict() == {str(debug_run.resolve()): DEBUG, str(real.resolve()): COMPLETE}
    assert "debug=fdr" in runs.detail[str(debug_run.resolve())]
    assert set(load_results(root).run_dir) == {str(real.resolve())}
    assert set(load_results(root, include_debug=True).run_dir) == {str(real.resolve()), str(debug_run.resolve())}

    assert report_main([str(root), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "1 complete, 0 incomplete, 0 failed, 1 debug runs"
    assert f"not averaged, debug: {debug_run.resolve()}" in out
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert (summary.n_seeds == 1).all()

    assert report_main([str(root), "--out", str(tmp_path / "with-debug"), "--include-debug"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "2 complete, 0 incomplete, 0 failed runs"
    assert (pd.read_csv(tmp_path / "with-debug" / "summary.csv").n_seeds == 2).all()
