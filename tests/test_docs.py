"""Docs that cannot drift: every command shown in README.md and docs/*.md is run in a cheap form.

- every program named (console script, ``python -m X``, ``python run.py``) exists, and its
  ``--help`` exits 0 (in-process: the same function the console script calls);
- every override line of ``mchad-train``, ``mchad-eval`` and ``mchad-data prepare`` composes (as
  ``--cfg job`` would; a sweep's first job);
- every ``config/...`` path named exists;
- every ``--help`` listing quoted is the real output.

In-process, because starting a process per command would cost seconds each; a slow test
runs the console scripts' ``--help`` as processes once.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from mchad.cli import command_line
from mchad.cli.sweep import LAUNCHER_PLUGINS, installed
from mchad.config import CONFIG_DIR, compose, groups
from mchad.errors import command

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
CHECKOUT = {"run.py": "mchad-train", "eval.py": "mchad-eval"}
"""A source checkout's scripts and the console script each stands for."""
HYDRA_APPS = ("mchad-train", "mchad-eval")
OWN_MODULES = ("mchad", "bench")
"""``python -m`` of these packages is checked; other tools' (``python -m submitit...``) are only described."""


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    program: tuple[str, ...]  # ("mchad-train",), ("python", "-m", "bench"), ("mchad-data", "prepare")
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {' '.join((*self.program, *self.args))}"


def code_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(line number of the first line, info string, lines) of every fenced block."""
    blocks, current, start, info = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if current is None:
                current, start, info = [], number + 1, stripped[3:].strip()
            else:
                blocks.append((start, info, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def shell_lines(lines: list[str], start: int) -> list[tuple[int, str]]:
    """Command lines of a block: prompts and comments stripped, continuation lines joined."""
    joined, pending, first = [], "", start
    for number, line in enumerate(lines, start):
        text = line.strip().removeprefix("$ ")
        if not pending:
            first = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        joined.append((first, pending + text))
        pending = ""
    return joined


def parse(page: str, number: int, line: str) -> Command | None:
    """A command of this project on a line, or None for anything else (other tools, prose, yaml)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    if not words:
        return None
    if words[0] in SCRIPTS:
        program = (
            words[:2] if words[0] == "mchad-data" and len(words) > 1 and not words[1].startswith("-") else words[:1]
        )
        return Command(page, number, tuple(program), tuple(words[len(program) :]))
    if words[0] == "python" and len(words) > 1:
        if words[1] in CHECKOUT:
            return Command(page, number, tuple(words[:2]), tuple(words[2:]))
        if words[1] == "-m" and len(words) > 2 and words[2].split(".")[0] in OWN_MODULES:
            return Command(page, number, tuple(words[:3]), tuple(words[3:]))
    return None


def commands() -> list[Command]:
    """Every command of this project in a fenced block or an inline code span of the pages."""
    found = []
    for page in PAGES:
        text = page.read_text()
        name = page.relative_to(ROOT).as_posix()
        for start, info, lines in code_blocks(text):
            if info in ("", "bash", "sh", "console", "text"):
                found += [parse(name, number, line) for number, line in shell_lines(lines, start)]
        for number, line in enumerate(text.splitlines(), 1):
            found += [parse(name, number, span) for span in re.findall(r"`([^`\n]+)`", line)]
    # the same command on many pages is checked once, where it is shown first
    unique = {}
    for shown in sorted((c for c in found if c is not None), key=lambda c: (c.page, c.line)):
        unique.setdefault((shown.program, shown.args), shown)
    return list(unique.values())


COMMANDS = commands()


def is_placeholder(word: str) -> bool:
    """A usage placeholder such as ``[OVERRIDE ...]``, ``[FLAGS]``, ``...``, ``ARG``, a shell variable or
    ``experiment=<exp>`` (a path with ``<time>`` in it composes: it is only a string)."""
    key, _, value = word.partition("=")
    bracketed = word.startswith("[") or (word.endswith("]") and "=" not in word)
    return bracketed or "..." in word or word.isupper() or "$" in word or ("<" in value and key in groups())


def run_in_process(program: tuple[str, ...], args: list[str]) -> tuple[int, str]:
    """Exit status and standard output of ``program args`` run in this process."""
    out = io.StringIO()
    argv = list(args)
    if program[0] == "python" and program[1] == "-m":
        target = lambda: runpy.run_module(program[2], run_name="__main__", alter_sys=True)
        argv0 = program[2]
    else:
        script = CHECKOUT.get(program[-1], program[0]) if program[0] == "python" else program[0]
        module, _, function = SCRIPTS[script].partition(":")
        target = getattr(importlib.import_module(module), function)
        argv = [*program[1:], *args] if program[0] == "mchad-data" else argv
        argv0 = program[1] if program[0] == "python" else script
    saved = sys.argv
    sys.argv = [argv0, *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(out):
            result = target()
            code = result if isinstance(result, int) else 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
    return code, out.getvalue()


def test_the_pages_show_commands_of_every_program():
    programs = {c.program[0] if c.program[0] != "python" else " ".join(c.program) for c in COMMANDS}
    assert set(SCRIPTS) <= programs, f"a console script no page shows: {set(SCRIPTS) - programs}"


@pytest.mark.parametrize("program", sorted({c.program for c in COMMANDS}), ids=" ".join)
def test_every_program_named_exists_and_its_help_exits_0(program, monkeypatch, tmp_path):
    shown_at = next(str(c) for c in COMMANDS if c.program == program)
    if program[0] == "python" and program[1] == "-m":
        monkeypatch.syspath_prepend(str(ROOT))  # python -m bench runs from the repository root
        assert importlib.util.find_spec(program[2]) is not None, f"no module {program[2]} ({shown_at})"
    elif program[0] == "python":
        assert (ROOT / program[1]).is_file(), f"no script {program[1]} ({shown_at})"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    code, out = run_in_process(program, ["--help"])
    assert code == 0 and out.strip(), f"{' '.join(program)} --help failed ({shown_at})"


def overrides_of(command: Command) -> list[str] | None:
    """The overrides of a Hydra command line, or None when it cannot be composed here: it only prints
    (``--help``), is a usage line, or needs a folder of the reader's (``--config-dir``)."""
    args = list(command.args)
    if any(a in ("--help", "-h", "--hydra-help", "--config-dir", "-cd", "--info") for a in args):
        return None
    if any(is_placeholder(a) for a in args):
        return None
    flags_with_values = {"--cfg", "-c", "--package", "-p"}
    overrides = [a for i, a in enumerate(args) if "=" in a and not a.startswith("-")
                 and (i == 0 or args[i - 1] not in flags_with_values)]  # fmt: skip
    for extra, modules in LAUNCHER_PLUGINS.items():
        if not all(map(installed, modules)):  # the docs show it; this environment lacks the extra
            launchers = (
                ("hydra/launcher=" + extra, "hydra/launcher=submitit") if extra == "slurm" else ("hydra/launcher=ray",)
            )
            if any(o.startswith(launchers) for o in overrides):
                overrides = [o for o in overrides if not o.startswith((*launchers, "hydra.launcher."))]
    # a placeholder in a path (``RUN/<time>/...``) stands for a real folder name, which Hydra's grammar takes
    parsed = command_line.parse([re.sub(r"<[^<>]*>", "x", o) for o in overrides], multirun=True)
    [first] = command_line.job_overrides(parsed, every_job=False)
    return first


HYDRA_COMMANDS = [
    c for c in COMMANDS if (CHECKOUT.get(c.program[-1], c.program[0]) in HYDRA_APPS or c.program == ("mchad-data", "prepare"))
]  # fmt: skip


@pytest.mark.parametrize("command", HYDRA_COMMANDS, ids=str)
def test_every_override_line_composes(command, tmp_path, monkeypatch):
    overrides = overrides_of(command)
    if overrides is None:
        pytest.skip("prints only, a usage line, or needs the reader's own config folder")
    monkeypatch.chdir(tmp_path)
    if command.program[0] == "mchad-data":
        experiments = [o for o in overrides if o.startswith("experiment=")] or [None]
        shared = [o for o in overrides if not o.startswith("experiment=")]
        for experiment in experiments:
            compose([*shared, *([experiment] if experiment else [])])
    else:
        compose(overrides)


CONFIG_PATH = re.compile(r"(?<![\w/.-])config/[\w./-]*[\w]")


def test_every_config_path_named_exists():
    missing = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for path in CONFIG_PATH.findall(line):
                if not (ROOT / path).exists():
                    missing.append(f"{page.relative_to(ROOT)}:{number}: {path}")
    assert not missing, missing


def test_every_group_file_named_exists():
    """``data/_common.yaml``-style names: a group folder and a yaml file, written without ``config/``.
    ``<group>/mine.yaml`` is the pages' name for a file of the reader's own."""
    known = {g.split("/")[0] for g in groups()} | {"hydra"}
    missing = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for span in re.findall(r"`([\w/.-]+\.yaml)`", line):
                own = Path(span).stem == "mine"
                if span.split("/")[0] in known and "/" in span and not own and not (CONFIG_DIR / span).exists():
                    missing.append(f"{page.relative_to(ROOT)}:{number}: {span}")
    assert not missing, missing


def listings() -> list[tuple[str, int, tuple[str, ...], list[str]]]:
    """(page, line, program, lines) of each block quoting a ``--help``: its first line is the usage
    line, or the sentence before it names ``<program> --help``."""
    found = []
    for page in PAGES:
        text = page.read_text()
        all_lines = text.splitlines()
        for start, info, lines in code_blocks(text):
            if info not in ("", "text") or not lines:
                continue
            usage = re.match(r"usage: (\S+(?: [a-z]+)?) \[-h\]", lines[0])
            before = " ".join(all_lines[max(0, start - 5) : start - 2])
            named = re.search(r"`([\w-]+(?: [a-z]+)?) --help`", before)
            if usage:
                program = tuple(usage.group(1).split())
            elif named and (named.group(1).split()[0] in SCRIPTS):
                program = tuple(named.group(1).split())
            else:
                continue
            found.append((page.relative_to(ROOT).as_posix(), start, program, lines))
    return found


def matches(shown: str, real: str) -> bool:
    """A quoted line equals the real one; ``...`` in it stands for a left-out part."""
    if "..." not in shown:
        return shown.rstrip() == real.rstrip()
    pattern = ".*".join(re.escape(part) for part in shown.rstrip().split("..."))
    return re.fullmatch(pattern, real.rstrip()) is not None


LISTINGS = listings()


@pytest.mark.parametrize("page,line,program,quoted", LISTINGS, ids=[f"{p}:{n}" for p, n, _, _ in LISTINGS])
def test_help_listings_quoted_are_the_real_output(page, line, program, quoted, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    code, out = run_in_process(program, ["--help"])
    real = out.splitlines()
    assert code == 0
    # the quote is a contiguous excerpt of the real output
    first = next((i for i, r in enumerate(real) if matches(quoted[0], r)), None)
    assert first is not None, f"{page}:{line}: {quoted[0]!r} is not in {' '.join(program)} --help"
    for offset, shown in enumerate(quoted):
        actual = real[first + offset] if first + offset < len(real) else "<end of output>"
        assert matches(shown, actual), f"{page}:{line + offset}: quoted {shown!r}, real {actual!r}"


def test_the_listings_are_found():
    assert {p for _, _, p, _ in LISTINGS} >= {("mchad-train",), ("mchad-data",), ("mchad-data", "prepare")}


@pytest.mark.slow
def test_console_scripts_help_exits_0_as_processes():
    """The console scripts as installed (one process each, started together)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    processes = {s: subprocess.Popen([str(bin_dir / s), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env) for s in SCRIPTS}  # fmt: skip
    for script, process in processes.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0 and out.strip(), f"{script} --help: {err.decode()[-500:]}"


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/venv/bin/mchad-train", {"train": "mchad-train", "eval": "mchad-eval", "data": "mchad-data"}),
        ("/home/me/mchad/run.py", {"train": "python run.py", "eval": "python eval.py", "data": "mchad-data"}),
        ("eval.py", {"train": "python run.py", "eval": "python eval.py", "report": "mchad-report"}),
    ],
)
def test_messages_name_the_command_the_user_ran(argv0, expected, monkeypatch):
    monkeypatch.setattr(sys, "argv", [argv0])
    assert {tool: command(tool) for tool in expected} == expected
    assert set(CHECKOUT) == {s for s in ("run.py", "eval.py") if (ROOT / s).is_file()}
