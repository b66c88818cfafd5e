"""notebooks/eval.ipynb runs top to bottom on a synthetic and on a real sweep, and is committed without outputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from jupyter_client.kernelspec import find_kernel_specs
from nbclient import NotebookClient
from test_report import METRICS, expected_summary, make_sweep
from test_sweeps import QUICK, sweep

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "eval.ipynb"


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.execution_count is None and cell.outputs == [], f"clear the outputs of cell {cell.get('id')}"


def execute_notebook(results_dir: Path, monkeypatch) -> list:
    """Run notebooks/eval.ipynb on ``results_dir``; returns the outputs of its code cells."""
    if "python3" not in find_kernel_specs():
        pytest.skip(f"no python3 Jupyter kernel spec found: install ipykernel into {sys.prefix}")
    # The kernel inherits the environment: the sweep to read, and this checkout's package first.
    monkeypatch.setenv("MCHAD_RESULTS_DIR", str(results_dir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    try:
        client.km = client.create_kernel_manager()
        client.start_new_kernel()
        client.start_new_kernel_client()
    except Exception as error:  # whatever stops a kernel from starting means there is none to test with
        pytest.skip(f"the python3 Jupyter kernel could not start: {error!r}")
    client.execute()  # raises CellExecutionError on the first failing cell, and shuts the kernel down

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    return outputs


def count_plots(outputs: list) -> int:
    return sum("image/png" in output.get("data", {}) for output in outputs)


def summary_table(outputs: list) -> dict[tuple[str, ...], dict[str, str]]:
    """The cells of the paper's table as the notebook displays it (its first markdown table), by (dataset, method, score)."""
    text = next(
        o["data"]["text/markdown"] for o in outputs if o.get("data", {}).get("text/markdown", "").startswith("|")
    )
    header, _, *rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.strip().splitlines()]
    return {tuple(row[:3]): dict(zip(header, row)) for row in rows}


def mean_std(cell: str) -> tuple[float, float]:
    mean, std = cell.split(" ± ")
    return float(mean), float(std)


def test_notebook_runs_on_a_synthetic_sweep(tmp_path, monkeypatch):
    make_sweep(tmp_path)
    outputs = execute_notebook(tmp_path, monkeypatch)
    assert count_plots(outputs) == 2  # one box plot per data set
    # the table shown holds the mean and std over seeds computed independently from the CSV files
    table, expected = summary_table(outputs), expected_summary(tmp_path)
    assert sorted(table) == sorted(expected.index)
    for key, stats in expected.iterrows():
        for metric in METRICS:
            shown = mean_std(table[key][metric])
            assert shown == pytest.approx((stats[(metric, "mean")], stats[(metric, "std")]), abs=0.0051), (key, metric)


@pytest.mark.slow  # the synthetic-sweep test above runs the same notebook code in the fast suite
def test_notebook_runs_on_a_real_quickstart_sweep(tmp_path, monkeypatch):
    # debug=limit's batch limits without its mark: the notebook, like a report, leaves smoke tests out
    limits = ["trainer.limit_train_batches=5", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    result = sweep(tmp_path, "seed=1,2", base=[*(o for o in QUICK if o != "debug=limit"), *limits])
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = execute_notebook(tmp_path / "logs" / "multiruns", monkeypatch)
    assert count_plots(outputs) == 1
    (row,) = summary_table(outputs).values()
    assert (row["dataset"], row["method"], row["score"], row["n_seeds"]) == ("digits", "mchad", "distance", "2")
    raw = pd.concat([pd.read_csv(path) for path in (tmp_path / "logs").rglob("results.csv")])
    per_run = raw.groupby("run_dir")[METRICS].mean() * 100
    for metric, values in per_run.items():
        assert mean_std(row[metric]) == pytest.approx((values.mean(), values.std()), abs=0.0051), metric
