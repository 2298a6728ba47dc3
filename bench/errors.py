"""Error types that carry what went wrong, where, and how to fix it.

Every error a user can provoke (bad names, bad files, missing weights) is a
:class:`BenchError`; the CLI prints it without a traceback and exits with 2.
"""

from __future__ import annotations

from pathlib import Path


class BenchError(Exception):
    """Base class for user-facing errors: a message plus an optional fix."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if fix is None else f"{message}\n  fix: {fix}")


class UnknownComponentError(BenchError, KeyError):
    """A component name that no loaded plugin provides."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return Exception.__str__(self)


class DuplicateComponentError(BenchError):
    """Two plugins register the same (kind, name)."""


class PluginError(BenchError):
    """A plugin failed to load or to answer a hook."""


class MissingDependencyError(BenchError):
    """An optional package or weights file a component needs is absent."""


class InputError(BenchError):
    """A data file is missing, unreadable or malformed."""

    def __init__(self, path: str | Path | None, problem: str, *, fix: str | None = None) -> None:
        self.path = None if path is None else Path(path)
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}", fix=fix)


class ConfigError(BenchError):
    """Options that do not fit together (caught while planning, before any work)."""
