"""Built-in executors."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec


@hookimpl
def bench_add_executors() -> dict[str, ComponentSpec]:
    return {}
