"""Per-frame cost of psnr, ssim and fid at 256x256 (run with --benchmark-enable).

Goal (issue 7): FID feature extraction >= 20 frames/s at batch 32 on the CPU.
Without --benchmark-enable each benchmark runs once as a smoke test; the FID
ones run a real InceptionV3 pass and are marked slow. FID runs both ways,
``eager`` (channels-last) and ``aoti`` (compiled, the default where a C++
compiler exists; its first call, the compilation, is a warm-up round).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from bench_plugins.metrics import inception
from bench_plugins.metrics.fid import FID
from bench_plugins.metrics.psnr import PSNR
from bench_plugins.metrics.ssim import SSIM

import bench.accel as accel

BATCH = 32
SIZE = 256


@pytest.fixture(scope="module")
def frames() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(BATCH, 3, SIZE, SIZE, generator=g)
    return (gt + 0.05 * torch.randn(gt.shape, generator=g)).clamp(0, 1), gt


@pytest.fixture(scope="module", params=["off", "on"], ids=["eager", "aoti"])
def fid_metric(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[FID]:
    if inception.fid_helper_torchscript() is None and not inception.fid_weights_path().is_file():
        pytest.skip("no FID weights available offline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
        mp.setenv("BENCH_HOME", str(tmp_path_factory.mktemp("bench_home")))
        if request.param == "on" and accel.compiler_available() is None:
            pytest.skip("no C++ compiler for AOTInductor")
        metric = FID(device="cpu", batch_size=BATCH, compile=request.param)
        metric.model  # noqa: B018 - load (and convert) the weights outside the timing
        yield metric


def _per_frame(benchmark: Any) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        mean = stats.stats.mean
        benchmark.extra_info["ms_per_frame"] = 1000 * mean / BATCH
        benchmark.extra_info["frames_per_s"] = BATCH / mean


@pytest.mark.benchmark
@pytest.mark.parametrize("cls", [PSNR, SSIM], ids=["psnr", "ssim"])
def test_pixel_metric_cost(benchmark: Any, frames: tuple[torch.Tensor, torch.Tensor], cls: type) -> None:
    metric = cls()
    gen, gt = frames
    benchmark(metric.update, frames=gen, gt_frames=gt)
    _per_frame(benchmark)
    assert metric.compute()[metric.name] > 0


@pytest.mark.slow
@pytest.mark.benchmark
def test_fid_feature_extraction_throughput(
    benchmark: Any, frames: tuple[torch.Tensor, torch.Tensor], fid_metric: FID
) -> None:
    """InceptionV3 pool3 features of a batch of 32 frames at 256x256 (resized to 299)."""
    gen, _ = frames
    feats = benchmark.pedantic(fid_metric.features, args=(gen,), rounds=3, warmup_rounds=1)
    _per_frame(benchmark)
    assert feats.shape == (BATCH, 2048)


@pytest.mark.slow
@pytest.mark.benchmark
def test_fid_update_cost_with_cached_gt(
    benchmark: Any, frames: tuple[torch.Tensor, torch.Tensor], fid_metric: FID, tmp_path: Path
) -> None:
    """A full update (generated features + moments) when the ground truth is cached."""
    gen, gt = frames
    fid_metric.update(frames=gen, gt_frames=gt, gt_key="bench/gt/0:32")  # fills the cache
    benchmark.pedantic(
        fid_metric.update, kwargs={"frames": gen, "gt_frames": gt, "gt_key": "bench/gt/0:32"}, rounds=2
    )
    _per_frame(benchmark)
