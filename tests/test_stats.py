"""Bootstrap intervals and paired comparisons against independent numpy computations."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from bench_plugins.metrics.psnr import PSNR

from bench.errors import InputError
from bench.metric import Metric
from bench.stats import PairedResult, bootstrap_ci, paired_comparison


def _psnr_states(values_per_clip: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
    """PSNR clip states holding the given per-frame values."""
    return [
        {
            "psnr_sum": torch.tensor(float(np.sum(v)), dtype=torch.float64),
            "n_frames": torch.tensor(float(len(v)), dtype=torch.float64),
        }
        for v in values_per_clip
    ]


def _numpy_bootstrap(clips: list[np.ndarray], n: int, seed: int, alpha: float, stat=None) -> tuple[float, float]:
    """Straightforward reference: draw clips, pool their frames, take the statistic."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(clips), size=(n, len(clips)))
    stat = stat or np.mean
    values = [stat(np.concatenate([clips[i] for i in row])) for row in draws]
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _clips(n_clips: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(20 + rng.normal(0, 2), 1.5, size=rng.integers(3, 40)) for _ in range(n_clips)]


def test_ci_of_pooled_psnr_matches_numpy_reference() -> None:
    clips = _clips(30, seed=0)
    ours = bootstrap_ci(PSNR(), _psnr_states(clips), n_resamples=500, seed=7, alpha=0.1)
    ref = _numpy_bootstrap(clips, 500, seed=7, alpha=0.1)
    assert ours["psnr"] == pytest.approx(ref, abs=1e-9)


def test_ci_of_a_mean_is_close_to_the_analytical_interval() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, size=400)
    low, high = bootstrap_ci(PSNR(), _psnr_states([np.array([v]) for v in x]), n_resamples=2000)["psnr"]
    half = 1.959964 * x.std(ddof=1) / np.sqrt(len(x))
    assert low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_seeded_and_default_resamples() -> None:
    states = _psnr_states(_clips(10, seed=2))
    metric = PSNR()
    assert bootstrap_ci(metric, states, seed=3) == bootstrap_ci(metric, states, seed=3)
    assert bootstrap_ci(metric, states, seed=3) != bootstrap_ci(metric, states, seed=4)
    default = bootstrap_ci(metric, states, seed=3)
    assert default == bootstrap_ci(metric, states, n_resamples=1000, seed=3)


def test_paired_zero_difference_is_not_significant() -> None:
    states = _psnr_states(_clips(20, seed=3))
    result = paired_comparison(PSNR(), states, states)["psnr"]
    assert result == PairedResult(0.0, 0.0, 0.0, False)


def test_paired_constant_shift_is_significant() -> None:
    clips = _clips(20, seed=4)
    shifted = [c + 0.25 for c in clips]
    result = paired_comparison(PSNR(), _psnr_states(shifted), _psnr_states(clips))["psnr"]
    assert result.delta == pytest.approx(0.25, abs=1e-9)
    assert result.low == pytest.approx(0.25, abs=1e-9) and result.high == pytest.approx(0.25, abs=1e-9)
    assert result.significant


def test_paired_interval_matches_numpy_reference() -> None:
    clips = _clips(25, seed=5)
    rng = np.random.default_rng(6)
    other = [c + rng.normal(0.1, 1.0, size=len(c)) for c in clips]
    ours = paired_comparison(PSNR(), _psnr_states(other), _psnr_states(clips), n_resamples=300, seed=9)["psnr"]
    # reference: the same draws for both runs, difference of pooled means
    draws = np.random.default_rng(9).integers(0, 25, size=(300, 25))
    diffs = [np.concatenate([other[i] for i in row]).mean() - np.concatenate([clips[i] for i in row]).mean()
             for row in draws]
    low, high = np.quantile(diffs, [0.025, 0.975])
    assert (ours.low, ours.high) == pytest.approx((low, high), abs=1e-9)
    assert ours.delta == pytest.approx(np.concatenate(other).mean() - np.concatenate(clips).mean(), abs=1e-9)
    assert ours.significant == (low > 0 or high < 0)


class _Median(Metric):
    """A 'cat' metric (per-frame values kept): median over frames."""

    name = "median"

    def __init__(self) -> None:
        super().__init__()
        self.add_state("values", torch.zeros(0, dtype=torch.float64), "cat")

    def _compute(self, state: Mapping[str, torch.Tensor]) -> float:
        return float(state["values"].median())


class _BigSum(Metric):
    """A metric with a large 'sum' field (like FID's moments): norm of the mean vector."""

    name = "bignorm"

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(70_000, dtype=torch.float64), "sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), "sum")

    def _compute(self, state: Mapping[str, torch.Tensor]) -> float:
        return float((state["total"] / state["n"]).norm())


def test_cat_states_are_concatenated_per_draw() -> None:
    clips = _clips(12, seed=8)
    states = [{"values": torch.from_numpy(c)} for c in clips]
    ours = bootstrap_ci(_Median(), states, n_resamples=200, seed=1)["median"]
    # torch's median is the lower middle value for even counts
    ref = _numpy_bootstrap(clips, 200, seed=1, alpha=0.05, stat=lambda v: np.sort(v)[(len(v) - 1) // 2])
    assert ours == pytest.approx(ref, abs=1e-12)


def test_large_sum_fields_are_count_weighted() -> None:
    rng = np.random.default_rng(9)
    vecs = [rng.normal(size=(int(rng.integers(1, 4)), 70_000)) for _ in range(6)]
    states = [{"total": torch.from_numpy(v.sum(0)), "n": torch.tensor(float(len(v)), dtype=torch.float64)}
              for v in vecs]
    ours = bootstrap_ci(_BigSum(), states, n_resamples=20, seed=2)["bignorm"]
    draws = np.random.default_rng(2).integers(0, 6, size=(20, 6))
    values = [np.linalg.norm(np.concatenate([vecs[i] for i in row]).mean(0)) for row in draws]
    assert ours == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])), rel=1e-12)


def test_each_distinct_draw_of_sum_states_is_computed_once() -> None:
    """Resamples with the same clip counts merge to the same sum state: one compute each."""
    calls = []

    class Counting(PSNR):
        def _compute(self, state: Mapping[str, torch.Tensor]) -> float:  # type: ignore[override]
            calls.append(1)
            return super()._compute(state)

    clips = _clips(3, seed=4)
    ours = bootstrap_ci(Counting(), _psnr_states(clips), n_resamples=300, seed=5)["psnr"]
    assert len(calls) <= 10  # C(3+3-1, 3) distinct multisets of 3 clips
    assert ours == pytest.approx(_numpy_bootstrap(clips, 300, seed=5, alpha=0.05), abs=1e-9)


def test_bad_input() -> None:
    with pytest.raises(InputError, match="empty split"):
        bootstrap_ci(PSNR(), [])
    states = _psnr_states(_clips(4, seed=10))
    with pytest.raises(InputError, match="same clips"):
        paired_comparison(PSNR(), states, states[:3])
