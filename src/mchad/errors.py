"""The exception types for failures a user can fix, each shown as one line ``error: <message>``.

Everything the user gave (command line, config values, data, checkpoints, directories)
that is wrong raises :class:`ConfigError` before training starts; the command-line
entry points print its message on one line and exit with status 2. Any other exception
is a bug or an environment failure and exits with status 1. Messages name the command the
user ran (:func:`command`); :func:`fail` is how every command ends on bad input.
"""

import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn


class ConfigError(ValueError):
    """Bad input. The message is one line: what was wrong, then how to fix it."""


class TrainingDiverged(ConfigError):
    """A loss term became NaN or infinite; the fix lies in the config (learning rate, data)."""


def fail(message: str) -> NoReturn:
    """The one way bad input ends: ``error: <message>`` on stderr, exit status 2 (``HYDRA_FULL_ERROR=1``:
    the traceback of the exception being handled first)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


CHECKOUT_SCRIPTS = {"train": "run.py", "eval": "eval.py"}
"""The scripts at the root of a source checkout, by the console script they stand for (``mchad-<tool>``)."""


def command(tool: str | None = None) -> str:
    """How the user runs ``tool`` (``train``, ``eval``, ``data``, ``report``), for messages and written files;
    without ``tool``, the command running now.

    ``python run.py`` / ``python eval.py`` when this process was started from a source
    checkout's scripts, else the installed console script ``mchad-<tool>``.
    """
    started_from = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if tool is None:
        tool = next((t for t, script in CHECKOUT_SCRIPTS.items() if script == started_from), None)
        tool = tool or (started_from.removeprefix("mchad-") if started_from.startswith("mchad-") else "train")
    if tool in CHECKOUT_SCRIPTS and started_from in CHECKOUT_SCRIPTS.values():
        return f"python {CHECKOUT_SCRIPTS[tool]}"
    return f"mchad-{tool}"
