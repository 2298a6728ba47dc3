"""Landmark distance: ``lmd`` (LipLMD, mouth points 48-67) and ``lmd-full`` (all 68 points).

The challenge's ``compute_lmd.py`` detects 68 landmarks on each ground-truth and
generated frame with face-alignment, keeps points 48-67, takes
``np.abs(pd - gt)`` per *coordinate* (not the Euclidean distance per point) and
averages over every coordinate of every frame of every video::

    LMD = 1 / (N * P * 2) * sum_frames sum_points (|x_pd - x_gt| + |y_pd - y_gt|)

in pixels of the frames as given (256x256 in ViCo). The official script skips a
frame whose ground truth has no face and crashes when the generated frame has
none; here both are skipped *and counted* (``lmd_no_face_frames``: generated
frame without a face while the ground truth has one; ``lmd_no_face_gt_frames``:
ground truth without a face), so a method cannot improve its LMD by losing the
face unnoticed.

Ground-truth landmarks are cached per content key below
``$BENCH_HOME/cache/landmarks/<backend cache id>/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.errors import InputError
from bench.metric import Metric

from ._imageops import cached_array, check_frames, content_key, to_uint8_hwc
from .landmarks import N_POINTS, Landmarker, shared_landmarker

if TYPE_CHECKING:
    import torch

MOUTH = slice(48, 68)
ALL_POINTS = slice(0, N_POINTS)


def landmark_distance_terms(
    pd: np.ndarray, gt: np.ndarray, points: slice
) -> tuple[float, int, np.ndarray, np.ndarray]:
    """The summable pieces of LMD for one batch.

    Args:
        pd, gt: (B,68,2) landmarks in pixels, NaN rows where no face.
        points: which landmarks count.

    Returns:
        (sum of |pd - gt| over kept frames, points and both coordinates,
        number of summed values, (B,) bool generated-face-found, (B,) bool GT-face-found).
    """
    pd_found = ~np.isnan(pd).any(axis=(1, 2))
    gt_found = ~np.isnan(gt).any(axis=(1, 2))
    keep = pd_found & gt_found
    diff = np.abs(pd[keep][:, points] - gt[keep][:, points])
    return float(diff.sum(dtype=np.float64)), int(diff.size), pd_found, gt_found


class LandmarkDistance(Metric):
    """LipLMD: mean absolute landmark difference over mouth points 48-67 (pixels, lower is better).

    Args:
        landmarker: landmark backend (``bench list landmarker``): ``dlib``
            (offline, default) or ``fan`` (the challenge's face-alignment).
        **landmarker_options: passed to the backend (``upsample=``, ``device=``...).

    ``update`` takes ``frames`` and ``gt_frames`` (B,3,H,W) in [0,1] and optionally
    ``gt_key``, a content key of that batch of ground-truth frames used to cache
    their landmarks (computed from the frames when absent).

    Example:
        >>> metric = bench.load("metric", "lmd", landmarker="dlib")   # doctest: +SKIP
        >>> metric.update(frames=fake, gt_frames=real)                 # doctest: +SKIP
        >>> metric.compute()  # {'lmd': 3.1, 'lmd_no_face_frames': 0.0, ...}  # doctest: +SKIP
    """

    name: ClassVar[str] = "lmd"
    higher_is_better: ClassVar[bool] = False
    inputs: ClassVar[frozenset[str]] = frozenset({"frames", "gt_frames"})
    frame_level: ClassVar[bool] = True
    version: ClassVar[str] = "1"
    points: ClassVar[slice] = MOUTH

    def __init__(self, landmarker: str = "dlib", **landmarker_options: Any) -> None:
        import torch

        super().__init__()
        self.landmarker_name = landmarker
        self.landmarker: Landmarker = shared_landmarker(landmarker, **landmarker_options)
        self.add_state("abs_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("n_values", torch.zeros((), dtype=torch.int64), "sum")
        self.add_state("n_frames", torch.zeros((), dtype=torch.int64), "sum")
        self.add_state("no_face", torch.zeros((), dtype=torch.int64), "sum")
        self.add_state("no_face_gt", torch.zeros((), dtype=torch.int64), "sum")

    @property
    def label(self) -> str:
        return f"landmarker={self.landmarker_name}"

    @property
    def backend(self) -> str:
        return str(getattr(self.landmarker, "backend", self.landmarker_name))

    def gt_landmarks(self, gt_frames: torch.Tensor, gt_key: str | None = None) -> np.ndarray:
        """(B,68,2) landmarks of ground-truth frames, from the cache when possible."""
        key = gt_key or content_key(to_uint8_hwc(gt_frames))
        return cached_array(
            ("landmarks", self.landmarker.cache_id),
            key,
            (gt_frames.shape[0], N_POINTS, 2),
            lambda: self.landmarker.detect(gt_frames),
        )

    def update(  # type: ignore[override]
        self,
        frames: torch.Tensor,
        gt_frames: torch.Tensor,
        gt_key: str | None = None,
        **_: object,
    ) -> None:
        """Add a batch: generated and ground-truth frames (B,3,H,W) in [0,1], aligned."""
        check_frames(self.name, frames, gt_frames)
        gt = self.gt_landmarks(gt_frames, gt_key)
        pd = self.landmarker.detect(frames)
        total, count, pd_found, gt_found = landmark_distance_terms(pd, gt, self.points)
        self._state["abs_sum"] += total
        self._state["n_values"] += count
        self._state["n_frames"] += len(pd)
        self._state["no_face"] += int(np.count_nonzero(gt_found & ~pd_found))
        self._state["no_face_gt"] += int(np.count_nonzero(~gt_found))

    def _compute(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        if int(state["n_frames"]) == 0:
            raise InputError(None, f"{self.name}: no frames were scored (empty split?)")
        n_values = int(state["n_values"])
        # NaN, not an error, when no frame had faces on both sides: the counts say why.
        value = float(state["abs_sum"]) / n_values if n_values else float("nan")
        return {
            self.name: value,
            f"{self.name}_no_face_frames": float(state["no_face"]),
            f"{self.name}_no_face_gt_frames": float(state["no_face_gt"]),
        }


class FullLandmarkDistance(LandmarkDistance):
    """``lmd-full``: as :class:`LandmarkDistance` over all 68 points."""

    name: ClassVar[str] = "lmd-full"
    points: ClassVar[slice] = ALL_POINTS
