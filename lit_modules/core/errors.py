"""The errors a user can cause: each is reported as one line naming the bad value, with a non-zero exit."""

from __future__ import annotations


class UserError(ValueError):
    """Bad user input (a config value, a path, data, a checkpoint): one line, exit 2, nothing half-written."""


class ConfigError(UserError):
    """A config value outside what is allowed."""


class DataError(UserError):
    """Data that cannot be read or is too small for the config."""
