"""Built-in datasets: the ViCo reader and the embedded `vico-mini`."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec

_BASE = "bench_plugins.datasets.vico"


@hookimpl
def bench_add_datasets() -> dict[str, ComponentSpec]:
    return {
        "vico": ComponentSpec(
            f"{_BASE}:vico",
            summary="a ViCo folder (challenge or full layout): vico:/path/to/ViCo",
            positional="root",
        ),
        "vico-mini": ComponentSpec(
            f"{_BASE}:vico_mini",
            summary="embedded synthetic ViCo-layout dataset, generated on first use",
        ),
    }
