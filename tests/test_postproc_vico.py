"""Acceptance on vico-mini: fusion and border repair the `rig` renderer's output (slow).

vico-mini's ground truth composites the rig-warped person over a static background,
while plain `rig` output drags the background near the head and (with zero padding)
shows black edges: exactly what fusion and border repair.
"""

from __future__ import annotations

import pytest
import torch

import bench
from bench.postproc import apply_chain, build_chain, check_renderer_options, parse_chain, start_clip

N_FRAMES = 16
# u2netp is a salient-object model: its background masks are softer than the
# human-segmentation U2NET the official thresholds (0.8 / 0.4) were set for
U2NETP_THRESHOLDS = {"ref_threshold": 0.99, "gen_threshold": 0.95}


@pytest.mark.slow
def test_fusion_and_border_raise_psnr_on_vico_mini() -> None:
    pytest.importorskip("rembg")
    dataset = bench.load("dataset", "vico-mini")
    sample = dataset.samples("val", "talking")[0]
    ref = sample.reference_image()
    coeffs = sample.gt_coeffs()
    assert coeffs is not None
    gt = torch.cat(list(sample.gt_frames(32)))[:N_FRAMES]
    psnr = {}
    for spec in ("none", "fusion", "border", "fusion+border"):
        names = parse_chain(spec)
        options = {"fusion": {"segmenter": "u2netp-offline", **U2NETP_THRESHOLDS}} if "fusion" in names else {}
        chain = build_chain(names, device="cpu", **options)
        renderer = bench.load("renderer", "rig", **check_renderer_options(
            chain, "rig", bench.load("renderer", "rig").render_options))
        start_clip(chain, ref)
        frames = torch.cat([apply_chain(chain, b)
                            for b in renderer.render(ref, coeffs[:N_FRAMES], source_coeffs=coeffs[0])])
        mse = ((frames - gt) ** 2).mean((1, 2, 3))
        psnr[spec] = float((10 * torch.log10(1 / mse)).mean())
    assert psnr["fusion"] > psnr["none"] + 1.0, psnr
    assert psnr["border"] > psnr["none"] + 1.0, psnr
    assert psnr["fusion+border"] >= max(psnr["fusion"], psnr["border"]) - 1e-3, psnr
