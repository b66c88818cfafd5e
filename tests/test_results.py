"""results.csv: atomic writes, round trip, completeness, the printed table."""

from __future__ import annotations

import csv
import os

import pytest

from mchad.evaluation import results as results_module
from mchad.evaluation.results import RESULT_COLUMNS, format_table, read_results, results_complete, write_results


def make_row(ood_dataset: str = "svhn", score: str = "distance", group: str = "far", auroc: float = 0.9) -> dict:
    return {
        "experiment": "cifar10-mchad",
        "method": "mchad",
        "dataset": "cifar10",
        "ood_dataset": ood_dataset,
        "group": group,
        "score": score,
        "seed": 1,
        "Accuracy": 0.9369,
        "AUROC": auroc,
        "AUPR-IN": 0.1 + 1e-13,
        "AUPR-OUT": 0.8518,
        "FPR95": 0.5235,
        "n_id": 10000,
        "n_ood": 26032,
        "epochs": 10,
        "debug": "",
        "run_dir": "logs/runs/x",
    }


def test_columns_in_design_order():
    assert RESULT_COLUMNS == (
        "experiment", "method", "dataset", "ood_dataset", "group", "score", "seed", "Accuracy",
        "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95", "n_id", "n_ood", "epochs", "debug", "run_dir",
    )  # fmt: skip


def test_round_trip(tmp_path):
    rows = [make_row(), make_row("gaussian", group="", auroc=1 / 3)]
    path = tmp_path / "run" / "results.csv"
    write_results(rows, path)
    frame = read_results(path)
    assert list(frame.columns) == list(RESULT_COLUMNS)
    assert frame.to_dict("records") == rows
    assert sorted(os.listdir(path.parent)) == ["results.csv"]


def test_a_file_written_before_the_debug_column_reads_as_a_real_run(tmp_path):
    row = make_row()
    path = tmp_path / "results.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[c for c in RESULT_COLUMNS if c != "debug"])
        writer.writeheader()
        writer.writerow({k: v for k, v in row.items() if k != "debug"})
    frame = read_results(path)
    assert list(frame.columns) == list(RESULT_COLUMNS) and frame.to_dict("records") == [row]
    assert results_complete(path), "a finished run of an older version is not run again"


def test_missing_and_unknown_columns_raise(tmp_path):
    row = make_row()
    del row["FPR95"]
    with pytest.raises(ValueError, match="row 1 lacks the column 'FPR95'"):
        write_results([make_row(), row], tmp_path / "results.csv")
    with pytest.raises(ValueError, match="unknown column 'AUTC'"):
        write_results([{**make_row(), "AUTC": 0.1}], tmp_path / "results.csv")
    assert not os.listdir(tmp_path)


class Crash(RuntimeError):
    pass


def test_crash_mid_write_leaves_no_file(tmp_path, monkeypatch):
    def crash_after_first_row(self, rows):
        for index, row in enumerate(rows):
            if index == 1:
                raise Crash("killed")
            self.writerow(row)

    monkeypatch.setattr(csv.DictWriter, "writerows", crash_after_first_row)
    with pytest.raises(Crash):
        write_results([make_row(), make_row("gaussian")], tmp_path / "results.csv")
    assert os.listdir(tmp_path) == []


def test_crash_keeps_previous_results(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    write_results([make_row()], path)
    before = path.read_bytes()

    def crash(*args):
        raise Crash("killed before rename")

    monkeypatch.setattr(results_module.os, "replace", crash)
    with pytest.raises(Crash):
        write_results([make_row(auroc=0.1)], path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["results.csv"]


def test_results_complete(tmp_path):
    path = tmp_path / "results.csv"
    assert not results_complete(path)
    write_results([], path)
    assert not results_complete(path)  # header only
    write_results([make_row()], path)
    assert results_complete(path)

    text = path.read_text()
    path.write_text(text.replace("FPR95,", ""))
    assert not results_complete(path)
    path.write_text("")
    assert not results_complete(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert not results_complete(path)


def test_read_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_results(tmp_path / "nope.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks the column 'experiment'"):
        read_results(tmp_path / "other.csv")


def test_format_table():
    rows = [make_row(auroc=0.8), make_row("gaussian", group="", auroc=0.6), make_row(score="energy", auroc=0.5)]
    table = format_table(rows)
    lines = table.splitlines()
    assert any("svhn" in line and "80.00" in line and "52.35" in line for line in lines)
    mean_lines = [line for line in lines if "mean" in line]
    assert len(mean_lines) == 2
    assert "70.00" in mean_lines[0] and "distance" in mean_lines[0]
    assert "50.00" in mean_lines[1] and "energy" in mean_lines[1]
    table.encode("ascii")  # no colour codes, no box-drawing characters
