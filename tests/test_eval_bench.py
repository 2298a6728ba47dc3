"""Throughput of `bench eval` for PSNR+SSIM+FID on 256x256 videos with warm GT caches
(target: >= 25 frames/s on the CPU). Run with ``pytest -m benchmark --benchmark-enable``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bench import evaluate, video

N_CLIPS, N_FRAMES, SIZE = 3, 64, 256


def _clip(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(N_FRAMES, 3, 8, 8, generator=gen)
    return torch.nn.functional.interpolate(low, size=(SIZE, SIZE), mode="bicubic").clamp(0, 1)


@pytest.mark.benchmark
@pytest.mark.slow  # InceptionV3 at 299x299 on a shared 2-core CPU
def test_eval_throughput_psnr_ssim_fid(benchmark: Any, tmp_path: Path,
                                       bench_home: Path) -> None:
    from bench_plugins.metrics.inception import fid_weights_path

    if not fid_weights_path().is_file():
        pytest.skip("pytorch-fid weights not in the torch hub cache")
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i in range(N_CLIPS):
        video.write_video(gt / f"c{i}.speaker.mp4", [_clip(i)])
        video.write_video(pred / f"c{i}.speaker.mp4", [(_clip(i) + 0.05 * torch.randn(1)).clamp(0, 1)])
    kwargs: dict[str, Any] = {"metrics": ["psnr", "ssim", "fid"], "n_resamples": 0, "batch_size": 16, "device": "cpu"}
    evaluate.evaluate_videos(pred, gt, "talking", **kwargs)  # warms the GT feature cache
    result = benchmark.pedantic(evaluate.evaluate_videos, args=(pred, gt, "talking"), kwargs=kwargs,
                                rounds=1, iterations=1)
    benchmark.extra_info["frames_per_s"] = result.fps
    benchmark.extra_info["threads"] = torch.get_num_threads()
    print(f"\nbench eval psnr+ssim+fid, warm GT cache: {result.frames} frames, {result.fps:.2f} frames/s "
          f"({torch.get_num_threads()} torch threads)")
    assert result.frames == N_CLIPS * N_FRAMES and "fid" in result.values
