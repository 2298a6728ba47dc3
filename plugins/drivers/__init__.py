"""Built-in drivers: baselines (`static`, `gt`), the LSTM family, ViCo baselines, ensembles."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec

_BASE = "bench_plugins.drivers"


@hookimpl
def bench_add_drivers() -> dict[str, ComponentSpec]:
    return {
        "static": ComponentSpec(
            f"{_BASE}.baselines:StaticDriver",
            summary="repeats the first frame's coefficients: the zero-motion baseline",
            tasks=("talking", "listening"),
        ),
        "gt": ComponentSpec(
            f"{_BASE}.baselines:GroundTruthDriver",
            summary="ground-truth coefficients: the renderer's upper bound",
            tasks=("talking", "listening"),
        ),
    }
