"""headbench: benchmark and evaluation harness for conversational head generation.

Public API (importing this module does not import torch)::

    import bench
    bench.available("driver")          # names with the plugin that provides each
    driver = bench.load("driver", "static")
    frames = bench.results("bench-results.db")   # pandas DataFrames
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Any

from .errors import BenchError, InputError, UnknownComponentError
from .registry import ComponentSpec, Entry, WeightsStatus

try:
    __version__ = _dist_version("headbench")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = [
    "BenchError",
    "ComponentSpec",
    "Entry",
    "InputError",
    "UnknownComponentError",
    "WeightsStatus",
    "__version__",
    "available",
    "configure",
    "load",
    "results",
]


def configure(plugin_args: list[str] | tuple[str, ...] = ()) -> None:
    """Reload plugins with ``-p`` style arguments (``["no:metrics", "myplugin"]``)."""
    from .plugins import configure as _configure

    _configure(plugin_args)


def available(kind: str | None = None) -> list[Entry]:
    """Registered components (of one kind, or all), each with its provenance."""
    from .plugins import session

    return list(session().registry.entries(kind))


def load(kind: str, name: str, **options: Any) -> Any:
    """Build the component ``name`` of ``kind`` with ``options``.

    ``name`` may carry an argument after a colon (``"videos:/path"``) for
    components that take one. Unknown names raise
    :class:`UnknownComponentError` with close matches and the available names.
    """
    from .plugins import session

    return session().registry.build(kind, name, **options)


def results(store: str = "bench-results.db") -> Any:
    """The results store as pandas DataFrames (see :func:`bench.store.results`)."""
    from .store import results as _results

    return _results(store)
