"""Exceptions for mistakes a user can fix. Each message names the file or option, what was found, and the fix."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "TrainingInterrupted", "UnetkitError"]


class UnetkitError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class ConfigError(UnetkitError, ValueError):
    """A bad option or configuration value."""


class DataError(UnetkitError, ValueError):
    """A dataset or image that cannot be used as given."""


class CheckpointError(UnetkitError, ValueError):
    """A file that is not a readable unetkit checkpoint."""


class TrainingInterrupted(UnetkitError):
    """Ctrl-C during training: ``last.pt`` was saved at the exact position; the message says how to resume."""
