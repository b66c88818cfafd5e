"""The console scripts ``mchad-data`` and ``mchad-report`` as a user runs them (``mchad-train`` / ``mchad-eval``
are Hydra applications: tests/test_cli.py and tests/test_bad_input.py).

Only ``--help`` and bad input, so nothing is downloaded, trained or benchmarked: ``--help`` exits 0
and prints the usage; bad arguments exit 2 with argparse's usage and one ``error:`` line; bad input
that argparse cannot see (an unknown experiment, a missing directory) exits 2 with exactly one line
``error: <what was wrong>: <how to fix it>`` on stderr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ["mchad-data", "mchad-report"]


def run_module(command: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed console script ``command`` (next to this Python) with ``args``."""
    script = Path(sys.executable).parent / command
    return subprocess.run([script, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def assert_usage_error(process: subprocess.CompletedProcess, module: str, message: str) -> None:
    """argparse's answer to bad arguments: status 2, the usage, then one ``<prog>: error: ...`` line."""
    assert process.returncode == 2, process.stderr
    assert process.stderr.startswith(f"usage: {module}"), process.stderr
    assert error_lines(process.stderr) == [process.stderr.splitlines()[-1]], process.stderr
    assert process.stderr.splitlines()[-1].startswith(f"{module}: error: {message}"), process.stderr


def assert_one_line_error(process: subprocess.CompletedProcess, *fragments: str) -> str:
    """A domain error: status 2 and exactly one line ``error: <what>: <how to fix it>`` on stderr."""
    assert process.returncode == 2, process.stderr
    lines = process.stderr.splitlines()
    assert len(lines) == 1, process.stderr
    [line] = lines
    assert line.startswith("error: ") and ": " in line.removeprefix("error: "), line
    for fragment in fragments:
        assert fragment in line
    return line


@pytest.mark.parametrize("module", COMMANDS)
def test_help_exits_0_and_prints_usage_and_examples(module):
    process = run_module(module, "--help")
    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith(f"usage: {module}"), process.stdout
    assert "examples:" in process.stdout
    assert "error" not in process.stderr


def test_data_prepare_help_exits_0():
    process = run_module("mchad-data", "prepare", "--help")
    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith("usage: mchad-data prepare"), process.stdout
    assert "experiment=" in process.stdout and "examples:" in process.stdout


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("mchad-data", ["prepare", "experiment=quickstart", "--no-such-flag"]),
        ("mchad-report", ["logs", "--out", "report", "--no-such-flag"]),
    ],
)
def test_unknown_flag_exits_2_with_usage_and_one_error_line(module, args):
    assert_usage_error(run_module(module, *args), module, "unrecognized arguments: --no-such-flag")


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("mchad-data", [], "the following arguments are required: COMMAND"),
        ("mchad-data", ["download"], "argument COMMAND: invalid choice: 'download'"),
        ("mchad-report", [], "the following arguments are required: DIR, --out"),
    ],
)
def test_missing_or_invalid_arguments_exit_2_with_usage_and_one_error_line(module, args, message):
    assert_usage_error(run_module(module, *args), module, message)


def test_data_prepare_unknown_experiment_is_one_line_before_any_download():
    process = run_module("mchad-data", "prepare", "experiment=cifar10-gmchad", "experiment=nope")
    line = assert_one_line_error(process, "experiment=nope", "unknown experiment 'nope'", "cifar10-gmchad")
    assert line.startswith("error: experiment=nope: ")
    assert process.stdout == ""  # checked before the first experiment's data are touched


def test_report_missing_directory_is_one_line(tmp_path):
    process = run_module("mchad-report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert_one_line_error(process, f"results directory {tmp_path / 'nowhere'} does not exist")
    assert not (tmp_path / "out").exists()


def test_report_out_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "report").write_text("")
    process = run_module("mchad-report", str(tmp_path), "--out", str(tmp_path / "report"))
    assert_one_line_error(process, f"--out {tmp_path / 'report'} is a file")


def test_data_verify_finds_a_flipped_byte_that_opening_does_not(tmp_path):
    """prepare, then verify: one ok line per data set and exit 0; one flipped pixel bit (size and header intact,
    so runs open the entry) makes verify name that entry and exit 1."""
    data_dir = f"paths.data_dir={tmp_path}"
    assert run_module("mchad-data", "prepare", "experiment=quickstart", data_dir).returncode == 0
    good = run_module("mchad-data", "verify", "experiment=quickstart", data_dir)
    assert good.returncode == 0, good.stderr
    lines = good.stdout.splitlines()
    assert len(lines) == 6 and all(": ok, " in line and "sha256 matches" in line for line in lines), good.stdout
    assert "quickstart: id       digits/train: ok, 722 images" in good.stdout
    images = tmp_path / "cache" / "digits-train-v1.npy"
    content = bytearray(images.read_bytes())
    content[-1] ^= 0x01
    images.write_bytes(bytes(content))
    bad = run_module("mchad-data", "verify", "experiment=quickstart", data_dir)
    assert bad.returncode == 1
    [damaged] = [line for line in bad.stdout.splitlines() if ": ok, " not in line]
    assert damaged.startswith("quickstart: id       digits/train: content hash differs: digits-train-v1.npy")
    assert "mchad-data prepare" in damaged
    assert bad.stderr.strip() == "error: 1 of 6 cache entries are damaged or missing (see the lines above)"
