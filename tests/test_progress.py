"""Progress output: a rich bar in a terminal, one line per epoch when the output goes to a file."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pytorch_lightning.callbacks import RichProgressBar

from mchad.progress import LogProgress, duration, progress_bar
from mchad.train import train

ROOT = Path(__file__).resolve().parents[1]
SHORT = [
    "experiment=quickstart",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
]
EPOCH_LINE = re.compile(
    r"epoch (\d+)/(\d+) · step (\d+) · loss (\d+\.\d{3}) · val acc ([01]\.\d{3}) · [\d,]+ img/s · eta \S+$"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_is_rich_in_a_terminal_and_lines_in_a_file(monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert isinstance(progress_bar(), RichProgressBar)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    bar = progress_bar(interval_s=42)
    assert isinstance(bar, LogProgress) and bar.interval_s == 42


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (0.4, 42, 59.4, 240, 3599, 3600, 7500)] == ["0s", "42s", "59s", "4m", "60m", "1h00m",
                                                                           "2h05m"]  # fmt: skip


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mchad.progress"]


def logged_per_epoch(run_dir: Path) -> list[tuple[str, str]]:
    """(epoch's mean training loss, validation accuracy) of each epoch as the CSV logger recorded them, to 3 places."""
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv").groupby("epoch")
    loss, accuracy = metrics["Loss/total/train_epoch"].first(), metrics["Accuracy/val"].first()
    return [(f"{loss[epoch]:.3f}", f"{accuracy[epoch]:.3f}") for epoch in sorted(loss.index)]


def test_a_run_writing_to_a_file_logs_one_line_per_epoch(run_config, monkeypatch, caplog):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    cfg, run_dir = run_config(*SHORT, "test=false")
    with caplog.at_level("INFO"):
        train(cfg, run_dir)
    lines = progress_lines(caplog)
    assert [EPOCH_LINE.match(line).groups()[:3] for line in lines] == [
        ("1", "3", "2"),
        ("2", "3", "4"),
        ("3", "3", "6"),
    ]
    # the epoch's mean loss (not its last step's) and the validation accuracy, as the CSV logger wrote them
    assert [EPOCH_LINE.match(line).groups()[3:] for line in lines] == logged_per_epoch(run_dir)
    assert lines[-1].endswith("eta 0s")
    assert not any("GPU available" in r.getMessage() or "TPU available" in r.getMessage() for r in caplog.records)


def test_long_epochs_also_log_within_the_epoch_at_the_interval(run_config, monkeypatch, caplog):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    cfg, run_dir = run_config(*SHORT, "trainer.max_epochs=2", "test=false", "callbacks.progress_bar.interval_s=0")
    with caplog.at_level("INFO"):
        train(cfg, run_dir)
    lines = progress_lines(caplog)
    assert [" · ".join(line.split(" · ")[:3]) for line in lines[:2] + lines[3:5]] == [
        "epoch 1/2 · step 1 · batch 1/2",
        "epoch 1/2 · step 2 · batch 2/2",
        "epoch 2/2 · step 3 · batch 1/2",
        "epoch 2/2 · step 4 · batch 2/2",
    ]
    assert [EPOCH_LINE.match(line).groups()[:3] for line in (lines[2], lines[5])] == [("1", "2", "2"), ("2", "2", "4")]
    assert len(lines) == 6


def test_testing_writes_one_line_per_test_set_naming_it_and_its_images(run_config, monkeypatch, caplog):
    """With interval_s=0 also a line after every batch but a set's last."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    overrides = ["trainer.max_epochs=1", "trainer.limit_test_batches=2", "data.eval_batch_size=16"]
    cfg, run_dir = run_config(*SHORT, *overrides, "callbacks.progress_bar.interval_s=0")
    with caplog.at_level("INFO"):
        train(cfg, run_dir)
    lines = [line for line in progress_lines(caplog) if line.startswith("test ")]
    names = ["digits", "digits-ood", "gaussian", "uniform"]  # experiment=quickstart: the ID test set, then testsets
    expected = [
        head
        for i, name in enumerate(names, 1)
        for head in (f"test {i}/4 · {name} · batch 1/2 · ", f"test {i}/4 · {name} · 32 images · ")
    ]
    assert [line[: len(head)] for line, head in zip(lines, expected)] == expected
    assert len(lines) == len(expected) and all(re.search(r" · [\d,]+ img/s$", line) for line in lines)


@pytest.mark.slow
def test_quickstart_redirected_to_a_file_shows_one_line_per_epoch_and_no_banner(tmp_path):
    """The real command, its output redirected to a file; run twice, the second run resumes (no warning)."""
    log_file = tmp_path / "out.log"
    command = [sys.executable, str(ROOT / "run.py"), *SHORT, "test=false", f"paths.log_dir={tmp_path}/logs",
               f"hydra.run.dir={tmp_path}/run"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for _ in range(2):
        with open(log_file, "a") as out:
            subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=True, cwd=tmp_path)
    text = log_file.read_text()
    lines = [line.split(" - ", 1)[1] for line in text.splitlines() if "[mchad.progress]" in line]
    assert [EPOCH_LINE.match(line).groups()[:2] for line in lines] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert "resuming from" in text
    for noise in ("GPU available", "TPU available", "exists and is not empty", "\r"):
        assert noise not in text
