"""Frame conversions and input checks shared by the landmark, identity and sharpness metrics.

The challenge's scripts read videos with OpenCV as ``uint8``; these helpers turn
the harness's float frames back into exactly those arrays so that detectors and
CPBD see the same pixels the official scripts see.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from bench.errors import InputError

if TYPE_CHECKING:
    import torch


def to_uint8_hwc(frames: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) float in [0,1] -> (B,H,W,3) uint8 RGB, rounded as a video decoder would."""
    import torch

    quantised = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return np.ascontiguousarray(quantised.permute(0, 2, 3, 1).cpu().numpy())


def rgb_to_gray_uint8(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) uint8 luma, bit-exact with ``cv2.COLOR_RGB2GRAY``.

    OpenCV 4 computes ``Y = 0.299 R + 0.587 G + 0.114 B`` for 8-bit images in
    15-bit fixed point (weights 9798, 19235, 3735) with rounding; the
    challenge's CPBD script converts its frames this way.
    """
    wide = rgb.astype(np.uint32)
    luma = wide[..., 0] * 9798 + wide[..., 1] * 19235 + wide[..., 2] * 3735 + (1 << 14)
    return (luma >> 15).astype(np.uint8)


def content_key(array: np.ndarray) -> str:
    """A short content hash of an array (dtype, shape and bytes) for cache keys."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_frames(metric: str, frames: torch.Tensor, gt_frames: torch.Tensor | None = None) -> None:
    """Raise :class:`InputError` for frames a metric cannot score.

    Args:
        metric: metric name, for the message.
        frames: (B,3,H,W) generated frames in [0,1].
        gt_frames: (B,3,H,W) ground-truth frames aligned with ``frames``, if used.
    """
    import torch

    pairs = [("generated", frames)] + ([] if gt_frames is None else [("ground-truth", gt_frames)])
    for role, batch in pairs:
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise InputError(
                None, f"{metric}: {role} frames must be (B,3,H,W), got {tuple(batch.shape)}"
            )
        if batch.shape[0] == 0:
            raise InputError(None, f"{metric}: empty batch of {role} frames")
        if not torch.isfinite(batch).all():
            raise InputError(
                None,
                f"{metric}: {role} frames contain NaN or infinite values",
                fix="check the renderer/post-processor output",
            )
    if gt_frames is not None and frames.shape != gt_frames.shape:
        raise InputError(
            None,
            f"{metric}: generated frames {tuple(frames.shape)} and ground-truth frames "
            f"{tuple(gt_frames.shape)} differ in size or count",
            fix="render at the ground truth's resolution and frame count",
        )


def cached_array(
    folder: tuple[str, ...], key: str, shape: tuple[int, ...], compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """``compute()`` memoised on disk at ``$BENCH_HOME/cache/<folder...>/<sha256(key)>.npy``.

    Keys are arbitrary strings (the harness's contain ``/`` and ``:``), so the file
    name is their hash. A cached file of another shape is recomputed. Written
    atomically, because shards running in parallel may fill the same cache.
    """
    import hashlib

    from bench.paths import cache_dir

    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    path = cache_dir(*folder) / f"{digest}.npy"
    if path.is_file():
        try:
            cached = np.load(path)
        except (OSError, ValueError):  # truncated by a crash: recompute
            cached = None
        if cached is not None and cached.shape == shape:
            return cached
    value = compute()
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npy")
    with os.fdopen(handle, "wb") as stream:
        np.save(stream, value)
    os.replace(tmp, path)
    return value
