"""PIRender throughput at 256x256 (pytest-benchmark; ``--benchmark-enable`` to time).

Goals on the 2-core reference CPU: >= 2.5 frames/s fp32 and >= 4 frames/s bf16, against
1.9 frames/s for the official architecture under inference_mode at batch 1. Timings on a
shared machine are noisy, so the official transcription is benchmarked in the same run
(``test_official_reference``) and the comparison is the ratio of the two.
With ``--benchmark-disable`` (the default) every benchmark runs once as a smoke test.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_plugins.renderers.pirender import (
    OFFICIAL_GFLOPS_PER_FRAME,
    throughput_report,
)
from bench_plugins.renderers.pirender_net import SEMANTIC_RADIUS, PIRenderGenerator
from pirender_reference import RefFaceGenerator, ref_windows

SIZE = 256
SMOKE_SIZE = 64  # with --benchmark-disable each benchmark only has to run
pytestmark = pytest.mark.benchmark


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return RefFaceGenerator().state_dict()


def _autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("batch", [1, 8, 32])
def test_pirender_throughput(benchmark: Any, weights: dict[str, torch.Tensor], batch: int, precision: str) -> None:
    if batch > 1 and not benchmark.enabled:
        pytest.skip("large batches are only worth their time when timing")
    size = SIZE if benchmark.enabled else SMOKE_SIZE
    model = PIRenderGenerator()
    model.load_state_dict(weights)
    model = model.to(memory_format=torch.channels_last).freeze()
    image = (torch.rand(1, 3, size, size) * 2 - 1).contiguous(memory_format=torch.channels_last)
    coeffs = torch.randn(73, batch + 2 * SEMANTIC_RADIUS)
    with torch.inference_mode(), _autocast(precision):
        features = model.prepare_source(image)

        def step() -> torch.Tensor:
            return model.synthesize(features, model.describe_sequence(coeffs))["fake_image"]

        out = benchmark.pedantic(step, rounds=3 if benchmark.enabled else 1, warmup_rounds=1)
    assert out.shape == (batch, 3, size, size)
    benchmark.extra_info.update(batch=batch, precision=precision)
    if benchmark.enabled and benchmark.stats is not None:
        fps = batch / benchmark.stats.stats.mean
        benchmark.extra_info.update(fps=fps, gflops=fps * OFFICIAL_GFLOPS_PER_FRAME)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_official_reference(benchmark: Any, weights: dict[str, torch.Tensor], precision: str) -> None:
    """The official architecture as its inference runs it (batch 1), for the ratio."""
    model = RefFaceGenerator().eval()
    model.load_state_dict(weights)
    size = SIZE if benchmark.enabled else SMOKE_SIZE
    image = torch.rand(1, 3, size, size) * 2 - 1
    window = ref_windows(torch.randn(1, 73))
    with torch.inference_mode(), _autocast(precision):
        out = benchmark.pedantic(
            lambda: model(image, window)["fake_image"], rounds=3 if benchmark.enabled else 1, warmup_rounds=1
        )
    assert out.shape == (1, 3, size, size)


def test_throughput_report_rows(bench_home: Path) -> None:
    rows = throughput_report(batch_sizes=(1,), precisions=("fp32",), size=64, seconds=0.01)
    assert len(rows) == 1
    row = rows[0]
    assert row["fps"] > 0 and row["gemm_gflops"] > 0
    work = OFFICIAL_GFLOPS_PER_FRAME * (64 / 256) ** 2
    assert row["peak_fraction"] == pytest.approx(row["fps"] * work / row["gemm_gflops"])
