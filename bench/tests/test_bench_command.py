"""``python -m bench`` as a user runs it: ``--help`` exits 0; bad arguments exit 2 with argparse's usage; bad
input argparse cannot see exits 2 with one line ``error: <what was wrong>: <how to fix it>``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_help_exits_0():
    process = bench("--help")
    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith("usage: python -m bench") and "examples:" in process.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--threads"], "argument --threads: expected one argument"),
        (["--threads", "0"], "argument --threads: 0 is less than 1"),
        (["no_such_benchmark"], "unknown benchmark no_such_benchmark: choose from train_throughput"),
    ],
)
def test_bad_arguments_exit_2_with_usage(args, message):
    process = bench(*args)
    assert process.returncode == 2 and process.stderr.startswith("usage: python -m bench"), process.stderr
    assert process.stderr.splitlines()[-1].startswith(f"python -m bench: error: {message}"), process.stderr


@pytest.mark.parametrize(
    ("make_root", "message"),
    [
        (lambda tmp: tmp / "nowhere", "does not exist"),
        (lambda tmp: (tmp / "cifar10").mkdir() or tmp, "has no tinyimagenet32/"),
    ],
    ids=["missing", "incomplete"],
)
def test_bad_data_root_is_one_line(tmp_path, make_root, message):
    process = bench("--data-root", str(make_root(tmp_path)), "metrics")
    assert process.returncode == 2, process.stderr
    assert len(process.stderr.splitlines()) == 1 and process.stderr.startswith("error: --data-root "), process.stderr
    assert message in process.stderr
