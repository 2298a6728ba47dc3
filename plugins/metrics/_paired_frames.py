"""Checks shared by the metrics that compare generated frames with ground truth.

Every problem a user can cause (misaligned clips, wrong resolution, NaNs from a
diverged renderer, an empty split) becomes an :class:`~bench.errors.InputError`
that names the metric, what is wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch

from bench.errors import InputError
from bench.metric import Metric

#: Values this far outside [0,1] are rounding noise (clamped); beyond it, an error.
RANGE_SLACK = 1e-3


def check_frames(metric: str, role: str, frames: torch.Tensor) -> torch.Tensor:
    """Validate one ``(b,3,H,W)`` batch in ``[0,1]``; return it as float, clamped to [0,1].

    Raises:
        InputError: wrong rank or channel count, NaN/inf, or values outside [0,1].
    """
    import torch

    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise InputError(
            None,
            f"{metric}: {role} must be a (b,3,H,W) RGB tensor, got {shape}",
            fix="pass frames as float tensors of shape (b,3,H,W) in [0,1]",
        )
    if not frames.is_floating_point():
        raise InputError(
            None,
            f"{metric}: {role} have dtype {frames.dtype}, expected float in [0,1]",
            fix="convert uint8 frames with frames.float() / 255",
        )
    if frames.numel() == 0:
        return frames.float()
    if not bool(torch.isfinite(frames).all()):
        bad = int((~torch.isfinite(frames)).flatten(1).any(1).sum())
        raise InputError(
            None,
            f"{metric}: {role} contain NaN or inf values ({bad} of {frames.shape[0]} frames)",
            fix="check the renderer/post-processor output for divergence",
        )
    low, high = float(frames.min()), float(frames.max())
    if low < -RANGE_SLACK or high > 1 + RANGE_SLACK:
        raise InputError(
            None,
            f"{metric}: {role} span [{low:.4g}, {high:.4g}], expected RGB in [0,1]",
            fix="scale frames to [0,1] (e.g. x / 255, or (x + 1) / 2 for [-1,1] outputs)",
        )
    return frames.float().clamp(0.0, 1.0)


def check_pair(
    metric: str, frames: torch.Tensor, gt_frames: torch.Tensor, *, same_size: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate aligned generated/ground-truth batches; return them checked and clamped.

    Args:
        metric: name used in messages.
        frames: ``(b,3,H,W)`` generated frames in [0,1].
        gt_frames: ``(b,3,H',W')`` ground-truth frames in [0,1], aligned with ``frames``.
        same_size: require ``(H,W) == (H',W')`` (pixel metrics do; FID resizes).

    Raises:
        InputError: different frame counts or sizes, or a bad batch (see :func:`check_frames`).
    """
    frames = check_frames(metric, "generated frames", frames)
    gt_frames = check_frames(metric, "ground-truth frames", gt_frames)
    if frames.shape[0] != gt_frames.shape[0]:
        raise InputError(
            None,
            f"{metric}: different frame counts in one update: {frames.shape[0]} generated "
            f"vs {gt_frames.shape[0]} ground-truth frames",
            fix="pass aligned batches (frame i of the generated clip with frame i of the ground truth)",
        )
    if same_size and frames.shape[-2:] != gt_frames.shape[-2:]:
        h, w = frames.shape[-2:]
        gh, gw = gt_frames.shape[-2:]
        raise InputError(
            None,
            f"{metric}: generated frames are {h}x{w} but ground-truth frames are {gh}x{gw} (HxW)",
            fix="render at the ground truth's resolution (or resize one side before the metric)",
        )
    return frames, gt_frames


def empty_split(metric: str) -> InputError:
    """The error for computing a value from a state that saw no frames."""
    return InputError(
        None,
        f"{metric}: no frames were seen (empty split or all clips skipped)",
        fix="check the split selection and that the clips produced frames",
    )


class PerFrameMean(Metric):
    """A score computed per aligned frame pair, pooled as the mean over all frames.

    State: ``<name>_sum`` (sum of per-frame scores) and ``n_frames``, float64
    "sum" fields, so clips, shards and bootstrap resamples merge exactly.
    Subclasses implement :meth:`per_frame`.
    """

    inputs: ClassVar[frozenset[str]] = frozenset({"frames", "gt_frames"})
    frame_level: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self._sum_key = f"{self.name}_sum"
        self.add_state(self._sum_key, torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("n_frames", torch.zeros((), dtype=torch.float64), "sum")

    def per_frame(self, frames: torch.Tensor, gt_frames: torch.Tensor) -> torch.Tensor:
        """``(b,3,H,W)`` pairs in [0,1] (checked) -> ``(b,)`` scores."""
        raise NotImplementedError

    def update(self, frames: torch.Tensor, gt_frames: torch.Tensor) -> None:  # type: ignore[override]
        """Add a batch of aligned ``(b,3,H,W)`` frames in [0,1]."""
        frames, gt_frames = check_pair(self.name, frames, gt_frames)
        if frames.shape[0] == 0:
            return
        values = self.per_frame(frames, gt_frames)
        self._state[self._sum_key] = self._state[self._sum_key] + values.sum().double().cpu()
        self._state["n_frames"] = self._state["n_frames"] + float(values.shape[0])

    def _compute(self, state: Mapping[str, torch.Tensor]) -> float:
        n = float(state["n_frames"])
        if n <= 0:
            raise empty_split(self.name)
        return float(state[self._sum_key]) / n
