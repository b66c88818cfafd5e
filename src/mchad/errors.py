"""The one exception type for bad input, raised before any training starts."""


class ConfigError(ValueError):
    """A bad configuration value. The message is one line: the bad value and how to fix it."""
