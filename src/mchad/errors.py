"""The exception types for failures a user can fix, each shown as one line ``error: <message>``.

Everything the user gave (command line, config values, data, checkpoints, directories)
that is wrong raises :class:`ConfigError` before training starts; the command-line
entry points print its message on one line and exit with status 2. Any other exception
is a bug or an environment failure and exits with status 1.
"""


class ConfigError(ValueError):
    """Bad input. The message is one line: what was wrong, then how to fix it."""


class TrainingDiverged(ConfigError):
    """A loss term became NaN or infinite; the fix lies in the config (learning rate, data)."""
