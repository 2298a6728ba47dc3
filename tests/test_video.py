"""Video round trips: frame-accurate counts, fps, quality near lossless."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import video
from bench.errors import InputError


def _clip(n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    # Like natural images: detailed luma, gentle chroma (4:2:0 halves chroma resolution).
    luma = torch.rand(1, 1, 16, 16, generator=gen)
    tint = torch.tensor([0.05, 0.0, -0.05]).view(1, 3, 1, 1)
    base = luma.repeat(1, 3, 1, 1) * 0.8 + 0.1 + tint
    smooth = torch.nn.functional.interpolate(base, size=(64, 64), mode="bicubic").clamp(0, 1)
    return torch.cat([torch.roll(smooth, shifts=i, dims=3) for i in range(n)])


def test_round_trip_is_frame_accurate(tmp_path: Path) -> None:
    frames = _clip(37)
    path = tmp_path / "a.mp4"
    assert video.write_video(path, [frames[:20], frames[20:]], crf=0) == 37
    info = video.probe(path)
    assert (info.n_frames, info.fps, info.width, info.height) == (37, 30.0, 64, 64)
    assert not info.has_audio
    batches = list(video.read_frames(path, batch_size=16))
    assert [b.shape[0] for b in batches] == [16, 16, 5]
    decoded = torch.cat(batches)
    mse = torch.mean((decoded - frames) ** 2).item()
    assert -10 * np.log10(mse) > 40  # yuv420 chroma subsampling only


def test_missing_and_truncated_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.mp4: video file not found"):
        video.probe(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="bad.mp4"):
        list(video.read_frames(bad))


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), video.VideoWriter(path) as writer:
        writer.write(_clip(3))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
