"""Built-in post-processors and segmenters."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec


@hookimpl
def bench_add_postprocessors() -> dict[str, ComponentSpec]:
    return {}
