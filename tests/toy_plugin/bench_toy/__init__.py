"""A toy third-party plugin: one driver and one metric, registered via entry point."""

from __future__ import annotations

from typing import Any

from bench.hookspecs import hookimpl
from bench.metric import Metric
from bench.registry import ComponentSpec


@hookimpl
def bench_add_drivers() -> dict[str, ComponentSpec]:
    return {"toy-zero": ComponentSpec("bench_toy:ZeroDriver", summary="all-zero coefficients")}


@hookimpl
def bench_add_metrics() -> dict[str, str]:
    return {"toy-mae": "bench_toy:MeanAbsError"}


class ZeroDriver:
    tasks = frozenset({"talking", "listening"})
    model = None

    def predict(self, batch: Any) -> Any:
        import torch

        return torch.zeros(batch.audio.shape[0], batch.audio.shape[1], 73)


class MeanAbsError(Metric):
    name = "toy-mae"
    higher_is_better = False

    def __init__(self) -> None:
        import torch

        super().__init__()
        self.add_state("abs_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, frames: Any, gt_frames: Any) -> None:  # type: ignore[override]
        self._state["abs_sum"] += (frames - gt_frames).abs().sum().double()
        self._state["count"] += frames.numel()

    def _compute(self, state: Any) -> float:
        return float(state["abs_sum"] / state["count"])
