"""PSNR and SSIM against piq (the challenge's definitions) and skimage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bench_plugins.metrics.psnr import PSNR, psnr_per_frame
from bench_plugins.metrics.ssim import SSIM, ssim_per_frame

import bench
from bench.errors import InputError

piq = pytest.importorskip("piq")
skm = pytest.importorskip("skimage.metrics")


def _pair(b: int, h: int, w: int, *, noise: float = 0.08, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth-ish frames (structure for SSIM to see) and a noisy, clamped copy."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 3, h // 8 + 1, w // 8 + 1, generator=g)
    gt = torch.nn.functional.interpolate(base, size=(h, w), mode="bicubic", align_corners=False)
    gt = gt.clamp(0, 1)
    gen = (gt + noise * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    return gen, gt


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).double().numpy()


# PSNR ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("h", "w"), [(256, 256), (64, 80)])
def test_psnr_matches_piq_and_skimage(h: int, w: int) -> None:
    gen, gt = _pair(4, h, w)
    ours = psnr_per_frame(gen, gt)
    ref = piq.psnr(gen, gt, data_range=1.0, reduction="none").double()
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0)
    sk = np.array([skm.peak_signal_noise_ratio(_hwc(gt[i]), _hwc(gen[i]), data_range=1.0) for i in range(4)])
    np.testing.assert_allclose(ours.numpy(), sk, atol=1e-4, rtol=0)


def test_psnr_identical_frames_are_80db_like_piq() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert psnr_per_frame(x, x).tolist() == pytest.approx([80.0, 80.0], abs=1e-9)
    assert piq.psnr(x, x, data_range=1.0, reduction="none").tolist() == pytest.approx([80.0, 80.0], abs=1e-4)


def test_psnr_pools_over_frames_not_clips() -> None:
    """A 1-frame clip and a 5-frame clip: the split value is the mean of 6 frame values."""
    metric = PSNR()
    clips = [_pair(1, 32, 32, noise=0.3, seed=1), _pair(5, 32, 32, noise=0.02, seed=2)]
    states, per_frame = [], []
    for gen, gt in clips:
        metric.reset()
        metric.update(frames=gen[:3], gt_frames=gt[:3])
        metric.update(frames=gen[3:], gt_frames=gt[3:])
        states.append(metric.state())
        for i in range(gen.shape[0]):
            mse = float(np.mean((gen[i].double().numpy() - gt[i].double().numpy()) ** 2))
            per_frame.append(-10 * np.log10(mse + 1e-8))
    pooled = metric.compute_state(metric.merge(states))["psnr"]
    assert pooled == pytest.approx(float(np.mean(per_frame)), abs=1e-9)
    clip_means = [np.mean(per_frame[:1]), np.mean(per_frame[1:])]
    assert abs(pooled - float(np.mean(clip_means))) > 1.0  # the two poolings really differ here


# SSIM ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("h", "w"), [(256, 256), (64, 80), (512, 384), (23, 40)])
def test_ssim_matches_piq(h: int, w: int) -> None:
    gen, gt = _pair(3, h, w)
    ours = ssim_per_frame(gen, gt)
    ref = piq.ssim(gen, gt, data_range=1.0, reduction="none").double()
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0), (ours - ref).abs().max()


@pytest.mark.parametrize(("h", "w"), [(256, 256), (64, 80)])
def test_ssim_matches_skimage_gaussian(h: int, w: int) -> None:
    """skimage with the Gaussian window (no downsampling below 384 px, as piq)."""
    gen, gt = _pair(3, h, w, seed=3)
    ours = ssim_per_frame(gen, gt).numpy()
    ref = [
        skm.structural_similarity(
            _hwc(gen[i]), _hwc(gt[i]), gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1.0, channel_axis=2,
        )
        for i in range(3)
    ]
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_ssim_metric_pools_and_merges() -> None:
    metric = SSIM()
    gen, gt = _pair(6, 48, 48, seed=4)
    metric.update(frames=gen, gt_frames=gt)
    one_pass = metric.compute()["ssim"]
    halves = []
    for sl in (slice(0, 2), slice(2, 6)):
        metric.reset()
        metric.update(frames=gen[sl], gt_frames=gt[sl])
        halves.append(metric.state())
    merged = metric.compute_state(metric.merge(halves))["ssim"]
    reference = float(piq.ssim(gen, gt, data_range=1.0, reduction="mean"))
    assert merged == pytest.approx(one_pass, rel=1e-12)
    assert merged == pytest.approx(reference, abs=1e-5)


# bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [PSNR, SSIM])
def test_bad_inputs_are_input_errors(cls: type) -> None:
    metric = cls()
    gen, gt = _pair(2, 32, 32)
    with pytest.raises(InputError, match="different frame counts"):
        metric.update(frames=gen, gt_frames=gt[:1])
    with pytest.raises(InputError, match="32x32 but ground-truth frames are 16x16"):
        metric.update(frames=gen, gt_frames=gt[..., :16, :16])
    nan = gen.clone()
    nan[1, 0, 3, 3] = float("nan")
    with pytest.raises(InputError, match="NaN or inf.*1 of 2 frames"):
        metric.update(frames=nan, gt_frames=gt)
    with pytest.raises(InputError, match=r"expected RGB in \[0,1\]"):
        metric.update(frames=gen * 255, gt_frames=gt)
    with pytest.raises(InputError, match="uint8"):
        metric.update(frames=(gen * 255).to(torch.uint8), gt_frames=gt)
    with pytest.raises(InputError, match=r"\(b,3,H,W\)"):
        metric.update(frames=gen[:, :1], gt_frames=gt[:, :1])
    with pytest.raises(InputError, match="no frames were seen"):
        metric.compute()
    with pytest.raises(InputError, match="empty split"):
        metric.compute_state(metric.state())


def test_rounding_noise_outside_range_is_clamped() -> None:
    gen, gt = _pair(2, 32, 32)
    metric = PSNR()
    metric.update(frames=gen + 5e-4, gt_frames=gt)  # within the 1e-3 slack
    assert np.isfinite(metric.compute()["psnr"])


def test_ssim_frames_smaller_than_window() -> None:
    with pytest.raises(InputError, match="smaller than the 11x11 window"):
        SSIM().update(frames=torch.rand(1, 3, 8, 8), gt_frames=torch.rand(1, 3, 8, 8))


def test_registered_and_loadable() -> None:
    psnr = bench.load("metric", "psnr")
    ssim = bench.load("metric", "ssim")
    assert isinstance(psnr, PSNR) and isinstance(ssim, SSIM)
    assert psnr.higher_is_better and ssim.higher_is_better
