"""Hydra's command line, read before Hydra runs: its flags, the overrides, and the jobs of a sweep.

:func:`mchad.cli.launch.preflight` checks a command line with these before Hydra creates
anything. Hydra's own parser is not public API and prints several lines for a
refusal; :class:`Flags` copies its documented flags and :func:`parse` uses Hydra's public
override grammar, so that every refusal is one line naming what the user typed.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from mchad.errors import ConfigError, command


class Flags(argparse.ArgumentParser):
    """Hydra's documented command-line flags (hydra.cc/docs/advanced/hydra-command-line-flags), read before Hydra.

    Hydra's own parser is not public API; this copy of its flags tells the
    pre-flight the mode and the overrides, takes flags anywhere on the line, and names an
    unknown flag in one line (tests/test_cli.py checks that it knows every flag Hydra knows).
    """

    SWITCHES = (
        "--help -h",
        "--hydra-help",
        "--version",
        "--resolve",
        "--run -r",
        "--multirun -m",
        "--shell-completion -sc",
    )
    VALUES = ("--package -p", "--config-path -cp", "--config-name -cn", "--config-dir -cd", "--experimental-rerun")
    INFO = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")

    def __init__(self) -> None:
        super().__init__(add_help=False)
        for names in self.SWITCHES:
            self.add_argument(*names.split(), action="store_true")
        for names in self.VALUES:
            self.add_argument(*names.split())
        self.add_argument("--cfg", "-c", choices=("job", "hydra", "all"))
        self.add_argument("--info", "-i", nargs="?", const="all", choices=self.INFO)
        self.add_argument("overrides", nargs="*")

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}: {command()} --hydra-help lists the flags")

    def read(self, argv: Sequence[str]) -> argparse.Namespace:
        args, unknown = self.parse_known_intermixed_args(list(argv))
        for flag in (a for a in unknown if a.startswith("-")):
            names = [name for option in self._actions for name in option.option_strings]
            close = difflib.get_close_matches(flag.split("=")[0], names, n=1)
            hint = f"did you mean {close[0]}?" if close else f"{command()} --hydra-help lists the flags"
            raise ConfigError(f"{flag} is not a flag of {command()}: {hint}")
        args.overrides += unknown
        return args


def parse(lines: Sequence[str], multirun: bool) -> list[Override]:
    """Each override in Hydra's grammar; ConfigError names one that is malformed, or a sweep without ``-m``."""
    parser = OverridesParser.create()
    parsed = []
    for line in lines:
        try:
            [override] = parser.parse_overrides([line])
        except HydraException as error:
            reason = str(error).splitlines()[0].split(" See https://")[0]
            raise ConfigError(f"{line} is not a valid override ({reason}): write key=value, a,b for a sweep") from None
        if override.is_sweep_override() and not multirun:
            key = override.get_key_element()
            raise ConfigError(
                f"{line} gives several values, which only a sweep takes: add -m to run one job per value "
                f"({command()} -m {line}), or write {key}=[...] for a list"
            )
        parsed.append(override)
    return parsed


def job_overrides(overrides: Sequence[Override], every_job: bool) -> list[list[str]]:
    """The overrides of each job of Hydra's basic sweeper, the product of every sweep's values
    (``a=1,2 b=3,4``: 4 jobs); with ``every_job=False`` the first job's only (another sweeper's
    search values, intervals included, are its own to check)."""
    values = []
    for override in overrides:
        if not override.is_sweep_override():
            values.append([override.input_line])
        elif override.is_discrete_sweep():
            key = override.get_key_element()
            swept = [f"{key}={value}" for value in override.sweep_string_iterator()]
            values.append(swept if every_job else swept[:1])
        elif every_job:
            raise ConfigError(
                f"{override.input_line} is an interval, which only a search samples: give values (a,b,c or "
                "range(...)), or search with hparams_search=<name> (docs/hparams.md)"
            )
    return [list(job) for job in itertools.product(*values)]


def searchpath_dirs(overrides: Sequence[str]) -> list[Path]:
    """The local folders of a ``hydra.searchpath=[file://DIR,...]`` override: more config groups."""
    for line in overrides:
        if line.startswith("hydra.searchpath="):
            [override] = OverridesParser.create().parse_overrides([line])
            entries = override.value() if isinstance(override.value(), list) else [override.value()]
            return [Path(str(e).removeprefix("file://")) for e in entries if not str(e).startswith("pkg://")]
    return []


def extra_config_dirs(args: argparse.Namespace) -> list[Path]:
    """The config folders a command line (:meth:`Flags.read`) adds: ``--config-dir``, then ``hydra.searchpath``'s."""
    return [*([Path(args.config_dir)] if args.config_dir else []), *searchpath_dirs(args.overrides)]
