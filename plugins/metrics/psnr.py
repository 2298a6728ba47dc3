"""PSNR as the ViCo challenge computes it (piq's definition), pooled over frames.

Per frame, on RGB in [0,1] (data range 1)::

    PSNR = -10 * log10(mean((x - y)^2) + 1e-8)

and the split's value is the mean over all frames of all clips (not a mean of
per-clip means). The ``1e-8`` is piq's: identical frames score 80 dB instead of
infinity. torchmetrics' ``peak_signal_noise_ratio`` has no such term (it returns
inf for identical frames, and differs by ``10 log10(1 + 1e-8/mse)`` otherwise),
so the formula is written out here rather than borrowed.

Example:
    >>> import torch
    >>> from bench_plugins.metrics.psnr import PSNR
    >>> m = PSNR()
    >>> m.update(frames=torch.zeros(2, 3, 8, 8), gt_frames=torch.full((2, 3, 8, 8), 0.1))
    >>> round(m.compute()["psnr"], 6)
    20.0
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ._paired_frames import PerFrameMean

#: piq's stabiliser inside the log (SPEC 7).
EPS = 1e-8


def psnr_per_frame(frames: torch.Tensor, gt_frames: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB.

    Args:
        frames, gt_frames: ``(b,3,H,W)`` in [0,1].

    Returns:
        ``(b,)`` float64. The squared error is averaged in float64 so large
        frames and long splits lose no precision.
    """
    diff = frames.to(torch.float64) - gt_frames.to(torch.float64)
    mse = diff.square().mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse + EPS)


class PSNR(PerFrameMean):
    """Peak signal-to-noise ratio, averaged over all frames of a split.

    State: ``psnr_sum`` (sum of per-frame PSNR) and ``n_frames``, both float64
    "sum" fields, so clips, shards and bootstrap resamples merge exactly.
    """

    name: ClassVar[str] = "psnr"
    higher_is_better: ClassVar[bool] = True
    version: ClassVar[str] = "1"

    @property
    def backend(self) -> str:
        return "builtin (piq definition: -10*log10(mse+1e-8), data range 1)"

    def per_frame(self, frames: torch.Tensor, gt_frames: torch.Tensor) -> torch.Tensor:
        return psnr_per_frame(frames, gt_frames)
