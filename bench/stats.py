"""Bootstrap confidence intervals and paired comparisons over clips.

Both work on the per-clip metric states the harness stores (see
:mod:`bench.metric`): a resample draws clips with replacement, merges their
states with the metric's own reductions and computes the value, so every
resample is pooled over frames exactly as the reported value is.

Resampling is seeded: ``numpy.random.default_rng(seed).integers(0, n_clips,
size=(n_resamples, n_clips))`` gives the clip indices of all resamples at once
(row r is resample r). The interval is the percentile interval
``quantile(values, [alpha/2, 1 - alpha/2])`` (numpy's default linear
interpolation) over the resample values.

Cost: for metrics whose state fields are small "sum" fields (PSNR, SSIM, ...)
all resamples are merged at once with a ``(R, n_clips)`` count matrix. Large
"sum" fields (FID's feature moments) are merged per resample as count-weighted
sums, and a metric may provide ``bootstrap_compute_state(state)`` (FID uses an
eigenvalue formulation ~10x cheaper than ``sqrtm``) and ``bootstrap_resamples``
(FID: 100, since each resample still costs an eigenproblem of size 2048).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch

    from .metric import Metric

State = Mapping[str, "torch.Tensor"]
#: Default number of resamples when a metric does not set ``bootstrap_resamples``.
DEFAULT_RESAMPLES = 1000
#: "sum" fields up to this many elements are stacked across clips (one matmul per field).
_STACK_LIMIT = 1 << 16


@dataclass(frozen=True)
class PairedResult:
    """Run A minus run B on the same clips.

    Attributes:
        delta: value(A) - value(B) on all clips.
        low, high: percentile bootstrap interval of the difference.
        significant: the interval excludes zero.
    """

    delta: float
    low: float
    high: float
    significant: bool


def resample_indices(n_clips: int, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n_clips)`` clip indices drawn with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_clips, size=(n_resamples, n_clips))


def _reductions(metric: Metric) -> dict[str, str]:
    return dict(metric.reductions())


def _draw_counts(indices: np.ndarray, n_clips: int) -> np.ndarray:
    """``(R, n_clips)`` float64: how often each clip was drawn in each resample."""
    return np.stack([np.bincount(row, minlength=n_clips) for row in indices]).astype(np.float64)


def _resampled_states(
    metric: Metric, clip_states: Sequence[State], indices: np.ndarray, counts: np.ndarray
) -> Callable[[int], dict[str, torch.Tensor]]:
    """A function giving the merged state of resample ``r`` (``counts``: :func:`_draw_counts`)."""
    import torch

    reductions = _reductions(metric)
    n_clips = len(clip_states)
    stacked: dict[str, torch.Tensor] = {}
    for key, reduce in reductions.items():
        if reduce == "sum" and clip_states[0][key].numel() <= _STACK_LIMIT:
            fields = torch.stack([s[key].detach().cpu().to(torch.float64) for s in clip_states])
            flat = torch.from_numpy(counts) @ fields.reshape(n_clips, -1)
            stacked[key] = flat.reshape(len(indices), *fields.shape[1:])

    def state_of(r: int) -> dict[str, torch.Tensor]:
        merged: dict[str, torch.Tensor] = {}
        for key, reduce in reductions.items():
            dtype = clip_states[0][key].dtype
            if key in stacked:
                merged[key] = stacked[key][r].to(dtype)
            elif reduce == "sum":
                total = torch.zeros_like(clip_states[0][key], dtype=torch.float64)
                for clip in np.flatnonzero(counts[r]):
                    total.add_(clip_states[int(clip)][key].to(torch.float64), alpha=float(counts[r, clip]))
                merged[key] = total.to(dtype)
            else:  # "cat": concatenate the drawn clips, repeats included, in draw order
                merged[key] = metric.merge([clip_states[i] for i in indices[r]])[key]
        return merged

    return state_of


def _resample_values(
    metric: Metric, clip_states: Sequence[State], indices: np.ndarray
) -> dict[str, np.ndarray]:
    """Metric values of every resample: ``{name: (R,)}``; NaN where a resample is undefined."""
    compute: Callable[[State], Mapping[str, float]] = getattr(
        metric, "bootstrap_compute_state", metric.compute_state
    )
    counts = _draw_counts(indices, len(clip_states))
    state_of = _resampled_states(metric, clip_states, indices, counts)
    # With only "sum" fields a resample's state depends on how often each clip was drawn,
    # not on the draw order: equal count vectors give the same value, computed once (with
    # 4 clips, 100 resamples hold at most 35 distinct ones; FID pays an eigenproblem each).
    by_counts = all(reduce == "sum" for reduce in _reductions(metric).values())
    seen: dict[bytes, Mapping[str, float]] = {}
    values: dict[str, np.ndarray] = {}
    for r in range(len(indices)):
        key = counts[r].tobytes() if by_counts else b""
        if by_counts and key in seen:
            result = seen[key]
        else:
            try:
                result = compute(state_of(r))
            except InputError:  # e.g. a resample without enough frames for a covariance
                result = {}
            if by_counts:
                seen[key] = result
        for name, value in result.items():
            values.setdefault(name, np.full(len(indices), np.nan))[r] = float(value)
    return values


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (math.nan, math.nan)
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return (float(low), float(high))


def _check(metric: Metric, clip_states: Sequence[Any], n_resamples: int | None, alpha: float) -> int:
    if len(clip_states) == 0:
        raise InputError(
            None,
            f"{metric.name}: no clip states to resample (empty split)",
            fix="check the split selection and that clips produced results",
        )
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    resamples = n_resamples if n_resamples is not None else getattr(metric, "bootstrap_resamples", DEFAULT_RESAMPLES)
    if int(resamples) < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {resamples}")
    return int(resamples)


def bootstrap_ci(
    metric: Metric,
    clip_states: Sequence[State],
    n_resamples: int | None = None,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence interval of each value ``metric`` reports.

    Args:
        metric: the metric that produced the states (its reductions and compute are used).
        clip_states: one state per clip, as returned by ``metric.state()``.
        n_resamples: resamples; ``None`` means the metric's ``bootstrap_resamples``
            (1000 unless the metric says otherwise; FID: 100).
        seed: seed of :func:`resample_indices`.
        alpha: 0.05 gives a 95% interval.

    Returns:
        ``{value name: (low, high)}``; ``(nan, nan)`` if no resample was computable.

    Raises:
        InputError: no clip states (empty split).
    """
    resamples = _check(metric, clip_states, n_resamples, alpha)
    indices = resample_indices(len(clip_states), resamples, seed)
    values = _resample_values(metric, clip_states, indices)
    return {name: _interval(vals, alpha) for name, vals in values.items()}


def paired_comparison(
    metric: Metric,
    states_a: Sequence[State],
    states_b: Sequence[State],
    n_resamples: int | None = None,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, PairedResult]:
    """Difference A - B of two runs over the same clips, with a paired bootstrap interval.

    ``states_a[i]`` and ``states_b[i]`` must come from the same clip; each resample
    draws the same clip indices for both runs, so clip difficulty cancels out.
    ``significant`` is True when the interval excludes zero (it says nothing
    about direction: read it with ``metric.higher_is_better``).

    Raises:
        InputError: empty or differently sized runs.
    """
    if len(states_a) != len(states_b):
        raise InputError(
            None,
            f"{metric.name}: paired comparison needs the same clips in both runs, "
            f"got {len(states_a)} and {len(states_b)} clip states",
            fix="compare runs over the same split (and the same clip order)",
        )
    resamples = _check(metric, states_a, n_resamples, alpha)
    full_a = metric.compute_state(metric.merge(states_a))
    full_b = metric.compute_state(metric.merge(states_b))
    indices = resample_indices(len(states_a), resamples, seed)
    values_a = _resample_values(metric, states_a, indices)
    values_b = _resample_values(metric, states_b, indices)
    out: dict[str, PairedResult] = {}
    for name, delta in ((n, full_a[n] - full_b[n]) for n in full_a if n in full_b):
        diffs = values_a.get(name, np.full(resamples, np.nan)) - values_b.get(name, np.full(resamples, np.nan))
        low, high = _interval(diffs, alpha)
        significant = bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))
        out[name] = PairedResult(float(delta), low, high, significant)
    return out
