"""The console scripts ``mchad-data`` and ``mchad-report`` as a user runs them (``mchad-train`` / ``mchad-eval``
are Hydra applications: tests/test_cli.py and tests/test_bad_input.py).

Only ``--help`` and bad input, so nothing is downloaded, trained or benchmarked: ``--help`` exits 0
and prints the usage; bad arguments exit 2 with argparse's usage and one ``error:`` line; bad input
that argparse cannot see (an unknown experiment, a missing directory) exits 2 with exactly one line
``error: <what was wrong>: <how to fix it>`` on stderr.

Each case runs the script's ``main(argv)`` in this process, with its output and exit status captured:
a start of Python, torch and Lightning per case would cost seconds and check nothing more here. The
installed scripts themselves answer ``--help`` from a fresh environment in tests/test_package.py.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from mchad.cli import data, report

COMMANDS = ["mchad-data", "mchad-report"]
MAINS = {"mchad-data": data.main, "mchad-report": report.main}


class Finished(NamedTuple):
    """What a command left: its exit status and its output (as ``subprocess.CompletedProcess`` has them)."""

    returncode: int
    stdout: str
    stderr: str


def run_main(command: str, *args: str, capsys) -> Finished:
    """The script ``command``'s ``main(args)``, in this process: its exit status, returned or raised."""
    try:
        status = MAINS[command](list(args))
    except SystemExit as exit_info:
        status = exit_info.code
    out = capsys.readouterr()
    return Finished(status, out.out, out.err)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def assert_usage_error(process: Finished, module: str, message: str) -> None:
    """argparse's answer to bad arguments: status 2, the usage, then one ``<prog>: error: ...`` line."""
    assert process.returncode == 2, process.stderr
    assert process.stderr.startswith(f"usage: {module}"), process.stderr
    assert error_lines(process.stderr) == [process.stderr.splitlines()[-1]], process.stderr
    assert process.stderr.splitlines()[-1].startswith(f"{module}: error: {message}"), process.stderr


def assert_one_line_error(process: Finished, *fragments: str) -> str:
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
def test_help_exits_0_and_prints_usage_and_examples(module, capsys):
    process = run_main(module, "--help", capsys=capsys)
    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith(f"usage: {module}"), process.stdout
    assert "examples:" in process.stdout
    assert "error" not in process.stderr


def test_data_prepare_help_exits_0(capsys):
    process = run_main("mchad-data", "prepare", "--help", capsys=capsys)
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
def test_unknown_flag_exits_2_with_usage_and_one_error_line(module, args, capsys):
    assert_usage_error(run_main(module, *args, capsys=capsys), module, "unrecognized arguments: --no-such-flag")


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("mchad-data", [], "the following arguments are required: COMMAND"),
        ("mchad-data", ["download"], "argument COMMAND: invalid choice: 'download'"),
        ("mchad-report", [], "the following arguments are required: DIR, --out"),
    ],
)
def test_missing_or_invalid_arguments_exit_2_with_usage_and_one_error_line(module, args, message, capsys):
    assert_usage_error(run_main(module, *args, capsys=capsys), module, message)


def test_data_prepare_unknown_experiment_is_one_line_before_any_download(capsys):
    process = run_main("mchad-data", "prepare", "experiment=cifar10-gmchad", "experiment=nope", capsys=capsys)
    line = assert_one_line_error(process, "experiment=nope", "unknown experiment 'nope'", "cifar10-gmchad")
    assert line.startswith("error: experiment=nope: ")
    assert process.stdout == ""  # checked before the first experiment's data are touched


def test_report_missing_directory_is_one_line(tmp_path, capsys):
    process = run_main("mchad-report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), capsys=capsys)
    assert_one_line_error(process, f"results directory {tmp_path / 'nowhere'} does not exist")
    assert not (tmp_path / "out").exists()


def test_report_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "report").write_text("")
    process = run_main("mchad-report", str(tmp_path), "--out", str(tmp_path / "report"), capsys=capsys)
    assert_one_line_error(process, f"--out {tmp_path / 'report'} is a file")


def test_data_verify_finds_a_flipped_byte_that_opening_does_not(tmp_path, capsys):
    """prepare, then verify: one ok line per data set and exit 0; one flipped pixel bit (size and header intact,
    so runs open the entry) makes verify name that entry and exit 1."""
    data_dir = f"paths.data_dir={tmp_path}"
    assert run_main("mchad-data", "prepare", "experiment=quickstart", data_dir, capsys=capsys).returncode == 0
    good = run_main("mchad-data", "verify", "experiment=quickstart", data_dir, capsys=capsys)
    assert good.returncode == 0, good.stderr
    lines = good.stdout.splitlines()
    assert len(lines) == 6 and all(": ok, " in line and "sha256 matches" in line for line in lines), good.stdout
    assert "quickstart: id       digits/train: ok, 722 images" in good.stdout
    images = tmp_path / "cache" / "digits-train-v1.npy"
    content = bytearray(images.read_bytes())
    content[-1] ^= 0x01
    images.write_bytes(bytes(content))
    bad = run_main("mchad-data", "verify", "experiment=quickstart", data_dir, capsys=capsys)
    assert bad.returncode == 1
    [damaged] = [line for line in bad.stdout.splitlines() if ": ok, " not in line]
    assert damaged.startswith("quickstart: id       digits/train: content hash differs: digits-train-v1.npy")
    assert "mchad-data prepare" in damaged
    assert bad.stderr.strip() == "error: 1 of 6 cache entries are damaged or missing (see the lines above)"


def test_data_verify_reads_an_entry_two_experiments_share_once(tmp_path, capsys, monkeypatch):
    """Each config still gets its lines, but an entry several configs read (outliers, test sets) is hashed once."""
    from mchad.data.cache import CacheEntry

    data_dir = f"paths.data_dir={tmp_path}"
    assert run_main("mchad-data", "prepare", "experiment=quickstart", data_dir, capsys=capsys).returncode == 0
    hashed = []
    real_verify = CacheEntry.verify
    monkeypatch.setattr(CacheEntry, "verify", lambda entry: hashed.append(entry.stem) or real_verify(entry))
    twice = run_main("mchad-data", "verify", "experiment=quickstart", "experiment=quickstart", data_dir, capsys=capsys)
    assert twice.returncode == 0, twice.stderr
    lines = twice.stdout.splitlines()
    assert len(lines) == 12 and lines[:6] == lines[6:] and all(": ok, " in line for line in lines), twice.stdout
    assert len(hashed) == len(set(hashed)) == len({line.split("(")[-1] for line in lines}), hashed
