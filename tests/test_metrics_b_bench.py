"""Per-frame cost at 256x256 of lmd, csim, cpbd and the FDs (run with --benchmark-enable)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import bench

BATCH = 8
needs_dlib = pytest.mark.skipif(
    importlib.util.find_spec("dlib") is None
    or importlib.util.find_spec("face_recognition_models") is None,
    reason="dlib-bin / face_recognition_models not installed",
)


@pytest.fixture(scope="module")
def faces() -> tuple[torch.Tensor, torch.Tensor]:
    """(BATCH,3,256,256) generated-like (noisy) and ground-truth face frames."""
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1).float().div(255)
    face = torch.nn.functional.interpolate(
        image[None, :, :256, 64:320], size=(256, 256), mode="area"
    )
    gt = face.repeat(BATCH, 1, 1, 1)
    noise = torch.randn(gt.shape, generator=torch.Generator().manual_seed(0)) * 0.02
    return (gt + noise).clamp(0, 1), gt


def _run(benchmark: Any, update: Callable[[], None]) -> None:
    benchmark.extra_info["frames_per_call"] = BATCH
    benchmark.pedantic(update, rounds=3, iterations=1, warmup_rounds=1)


@needs_dlib
@pytest.mark.benchmark
@pytest.mark.parametrize("name", ["lmd", "csim"])
def test_bench_dlib_metrics(
    benchmark: Any, faces: tuple[torch.Tensor, torch.Tensor], name: str, bench_home: Path
) -> None:
    frames, gt = faces
    metric = bench.load("metric", name)
    # Distinct generated frames per call so the landmarker's memo does not hide the cost.
    calls = iter(range(1_000_000))

    def update() -> None:
        shift = next(calls) % 7 + 1
        metric.update(frames=torch.roll(frames, shifts=shift, dims=3), gt_frames=gt, gt_key="bench")

    _run(benchmark, update)
    assert np.isfinite(metric.compute()[name])


@pytest.mark.benchmark
def test_bench_cpbd(benchmark: Any, faces: tuple[torch.Tensor, torch.Tensor]) -> None:
    metric = bench.load("metric", "cpbd")
    _run(benchmark, lambda: metric.update(frames=faces[0]))
    assert 0 < metric.compute()["cpbd"] <= 1


@pytest.mark.benchmark
def test_bench_expfd(benchmark: Any) -> None:
    metric = bench.load("metric", "expfd")
    pd, gt = torch.randn(BATCH, 73), torch.randn(BATCH, 73)
    _run(benchmark, lambda: metric.update(coeffs=pd, gt_coeffs=gt))
    assert metric.compute()["expfd"] > 0
