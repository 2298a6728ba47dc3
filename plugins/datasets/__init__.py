"""Built-in datasets: the ViCo reader and the embedded `vico-mini`."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec


@hookimpl
def bench_add_datasets() -> dict[str, ComponentSpec]:
    return {}
