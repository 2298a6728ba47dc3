"""Built-in renderers."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec


@hookimpl
def bench_add_renderers() -> dict[str, ComponentSpec]:
    return {}
