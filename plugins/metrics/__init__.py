"""Built-in metrics and their backends."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec


@hookimpl
def bench_add_metrics() -> dict[str, ComponentSpec]:
    return {}
