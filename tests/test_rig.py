"""The `rig` renderer: identity, geometry against scipy's map_coordinates, padding, streaming."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from bench_plugins.renderers.rig import FACE_RADIUS_PX, RigRenderer
from scipy.ndimage import map_coordinates

import bench
from bench.contracts import Renderer

SIZE = 256
ANGLE, EXP, TRANS, CROP = 0, 3, 67, 70


def _source(seed: int = 0) -> torch.Tensor:
    """A smooth random image (3,H,W) in [0,1]: bilinear sampling of it is well conditioned."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 16, 16, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic",
                                           align_corners=False)[0].clamp(0, 1)


def _neutral(cx: float = 127.5, cy: float = 120.0, s: float = 1.0) -> torch.Tensor:
    """Coefficients of a face centred at pixel (cx, cy) (y down) with scale s."""
    c = torch.zeros(73)
    c[CROP:CROP + 3] = torch.tensor([s, cx, SIZE - 1 - cy])
    return c


def _render(rig: RigRenderer, source: torch.Tensor, coeffs: torch.Tensor,
            neutral: torch.Tensor) -> torch.Tensor:
    return torch.cat(list(rig.render(source, coeffs, source_coeffs=neutral)))


def _reference_warp(source: torch.Tensor, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Bilinear sampling with scipy at pixel coordinates (the independent reference)."""
    img = source.numpy()
    return np.stack([map_coordinates(img[c], [src_y, src_x], order=1, mode="nearest") for c in range(3)])


def _face_box(cx: float, cy: float, half: int) -> tuple[slice, slice]:
    return slice(int(cy) - half, int(cy) + half), slice(int(cx) - half, int(cx) + half)


def test_registered_and_satisfies_contract() -> None:
    rig = bench.load("renderer", "rig", padding_mode="border")
    assert isinstance(rig, RigRenderer)
    assert rig.padding_mode == "border"
    assert isinstance(rig, Renderer)
    assert "padding_mode" in rig.render_options


def test_zero_difference_returns_the_source() -> None:
    source = _source()
    neutral = _neutral()
    neutral[EXP:EXP + 64] = torch.randn(64)  # any source coefficients: only differences count
    neutral[ANGLE:ANGLE + 3] = torch.tensor([0.1, -0.2, 0.05])
    out = _render(RigRenderer(), source, neutral.repeat(5, 1), neutral)
    assert out.shape == (5, 3, SIZE, SIZE)
    assert torch.allclose(out, source.expand(5, -1, -1, -1), atol=1e-5)


def test_default_source_coeffs_is_first_frame() -> None:
    source = _source(1)
    coeffs = _neutral().repeat(3, 1)
    coeffs[1:, EXP] = 1.5
    rig = RigRenderer()
    out = torch.cat(list(rig.render(source, coeffs)))
    assert torch.allclose(out[0], source, atol=1e-5)
    assert not torch.allclose(out[1], source, atol=1e-3)


def test_crop_shift_moves_the_head_by_whole_pixels() -> None:
    source, neutral = _source(2), _neutral()
    frame = neutral.clone()
    frame[CROP + 1] += 10.0  # tx: 10 px right
    frame[CROP + 2] += 6.0  # ty counts from the bottom: 6 px up
    out = _render(RigRenderer(), source, frame[None], neutral)[0]
    rows, cols = _face_box(127.5, 120.0 - 6, 50)
    expected = source[:, rows.start + 6 : rows.stop + 6, cols.start - 10 : cols.stop - 10]
    assert torch.allclose(out[:, rows, cols], expected, atol=1e-4)


@pytest.mark.parametrize("scale_ratio", [0.5, 1.25])
def test_crop_scale_zooms_about_the_face_centre(scale_ratio: float) -> None:
    source = _source(3)
    cx, cy = 130.0, 118.0
    neutral = _neutral(cx, cy, s=1.0)
    frame = neutral.clone()
    frame[CROP] = scale_ratio  # face size ~ 1/s: zoom = 1/scale_ratio
    out = _render(RigRenderer(), source, frame[None], neutral)[0].numpy()
    zoom = 1.0 / scale_ratio
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    ref = _reference_warp(source, cy + (yy - cy) / zoom, cx + (xx - cx) / zoom)
    rows, cols = _face_box(cx, cy, 40)  # well inside the rigid head region
    np.testing.assert_allclose(out[:, rows, cols], ref[:, rows, cols], atol=2e-3)


def test_roll_rotates_about_the_face_centre() -> None:
    source = _source(4)
    cx, cy = 127.5, 127.5
    neutral = _neutral(cx, cy)
    frame = neutral.clone()
    theta = 0.3
    frame[ANGLE + 2] = theta
    out = _render(RigRenderer(), source, frame[None], neutral)[0].numpy()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    dx, dy = xx - cx, yy - cy
    # output pixel p shows the source at c + R(-theta)(p - c)
    src_x = cx + math.cos(theta) * dx + math.sin(theta) * dy
    src_y = cy - math.sin(theta) * dx + math.cos(theta) * dy
    ref = _reference_warp(source, src_y, src_x)
    rows, cols = _face_box(cx, cy, 45)
    np.testing.assert_allclose(out[:, rows, cols], ref[:, rows, cols], atol=3e-3)


def test_trans_z_brings_the_head_closer() -> None:
    source = _source(5)
    neutral = _neutral(127.5, 127.5)
    frame = neutral.clone()
    frame[TRANS + 2] = 2.0  # camera at distance 10: zoom (10-0)/(10-2) = 1.25
    out = _render(RigRenderer(), source, frame[None], neutral)[0].numpy()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    ref = _reference_warp(source, 127.5 + (yy - 127.5) / 1.25, 127.5 + (xx - 127.5) / 1.25)
    rows, cols = _face_box(127.5, 127.5, 40)
    np.testing.assert_allclose(out[:, rows, cols], ref[:, rows, cols], atol=2e-3)


def test_yaw_moves_the_face_centre_more_than_its_outline() -> None:
    rig = RigRenderer()
    neutral = _neutral(127.5, 127.5)
    frame = neutral.clone()
    frame[ANGLE + 1] = 0.4
    flow = rig.flow(frame[None], neutral, SIZE, SIZE)[0]
    base = rig.flow(neutral[None], neutral, SIZE, SIZE)[0]
    shift = (flow - base)[..., 0] * SIZE / 2  # horizontal sampling offset in pixels
    centre = shift[128, 128].abs()
    outline = shift[128, 128 + int(1.2 * FACE_RADIUS_PX)].abs()
    assert centre > 5.0
    assert outline < 0.5 * centre
    assert shift[5, 5].abs() < 1e-4  # far background: untouched


def test_jaw_component_moves_the_chin_down_and_nothing_outside_the_face() -> None:
    rig = RigRenderer()
    neutral = _neutral(127.5, 127.5)
    frame = neutral.clone()
    frame[EXP + 0] = 2.0
    grid = rig.flow(frame[None], neutral, SIZE, SIZE)[0]
    base = rig.flow(neutral[None], neutral, SIZE, SIZE)[0]
    dy = (grid - base)[..., 1] * SIZE / 2
    chin_y = int(127.5 + 0.75 * FACE_RADIUS_PX)
    assert dy[chin_y, 128] < -5.0  # the chin samples from higher up: content moves down
    eyes_y = int(127.5 - 0.26 * FACE_RADIUS_PX)
    assert abs(dy[eyes_y, 128 + 22]) < 0.2  # the upper face stays still
    assert ((grid - base).abs()[:, :20] * SIZE / 2).max() < 0.01  # far from the face: no motion


def test_blink_component_contracts_the_eyes() -> None:
    rig = RigRenderer()
    neutral = _neutral(127.5, 127.5)
    frame = neutral.clone()
    frame[EXP + 3] = 1.0
    grid = rig.flow(frame[None], neutral, SIZE, SIZE)[0]
    base = rig.flow(neutral[None], neutral, SIZE, SIZE)[0]
    dy = (grid - base)[..., 1] * SIZE / 2
    eye_x = int(127.5 + 0.34 * FACE_RADIUS_PX)
    eye_y = 127.5 - 0.26 * FACE_RADIUS_PX
    above, below = int(eye_y - 5), int(eye_y + 5)
    # backward flow: rows above the eye line sample further up, rows below further down
    assert dy[above, eye_x] < -0.5
    assert dy[below, eye_x] > 0.5


def test_padding_modes_differ_only_where_samples_leave_the_image() -> None:
    source = _source(6)
    neutral = _neutral(127.5, 127.5, s=0.6)  # a large face: the head region spans the frame
    frame = neutral.clone()
    frame[CROP + 1] += 25.0  # head moves right: the left border samples beyond the image
    zeros = _render(RigRenderer(padding_mode="zeros"), source, frame[None], neutral)[0]
    border = _render(RigRenderer(padding_mode="border"), source, frame[None], neutral)[0]
    grid = RigRenderer().flow(frame[None], neutral, SIZE, SIZE)[0]
    inside = (grid.abs() <= 1 - 1.0 / SIZE).all(-1)  # whole bilinear footprint inside
    outside = (grid.abs() >= 1 + 1.0 / SIZE).any(-1)
    diff = (zeros - border).abs().amax(0)
    assert outside.any()
    assert diff[inside].max() < 1e-6
    assert (zeros[:, outside] == 0).all()
    assert diff[outside].min() > 0  # the smooth source is > 0 at every border pixel
    # the affected pixels lie near the image border
    ys, xs = torch.nonzero(diff > 1e-6, as_tuple=True)
    margin = torch.minimum(torch.minimum(ys, SIZE - 1 - ys), torch.minimum(xs, SIZE - 1 - xs))
    assert margin.max() < 40


def test_streams_in_batches_identical_to_one_batch() -> None:
    source = _source(7)
    gen = torch.Generator().manual_seed(0)
    coeffs = _neutral().repeat(70, 1) + 0.1 * torch.randn(70, 73, generator=gen)
    small = RigRenderer(batch_size=32)
    batches = list(small.render(source, coeffs))
    assert [b.shape[0] for b in batches] == [32, 32, 6]
    assert all(b.dtype == torch.float32 and b.min() >= 0 and b.max() <= 1 for b in batches)
    whole = torch.cat(list(RigRenderer(batch_size=70).render(source, coeffs)))
    assert torch.allclose(torch.cat(batches), whole, atol=1e-6)


def test_rejects_bad_shapes_and_options() -> None:
    rig = RigRenderer()
    with pytest.raises(ValueError, match="coeffs"):
        next(rig.render(_source(), torch.zeros(4, 70)))
    with pytest.raises(ValueError, match="source"):
        next(rig.render(torch.zeros(256, 256), torch.zeros(4, 73)))
    with pytest.raises(ValueError, match="padding_mode"):
        RigRenderer(padding_mode="wrap")


@pytest.mark.benchmark
def test_throughput_256_batch32(benchmark: Any) -> None:
    """Goal: >= 200 frames/s at 256x256, batch 32 (single-threaded, as vico-mini renders)."""
    source = _source(8)
    gen = torch.Generator().manual_seed(1)
    coeffs = _neutral().repeat(256, 1) + 0.1 * torch.randn(256, 73, generator=gen)
    rig = RigRenderer(batch_size=32)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frames = benchmark.pedantic(lambda: sum(b.shape[0] for b in rig.render(source, coeffs)),
                                    rounds=3, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(before)
    assert frames == 256
    if benchmark.stats is not None:  # only when benchmarks are enabled
        fps = 256 / benchmark.stats.stats.min
        benchmark.extra_info["frames_per_s"] = fps
        assert fps >= 200
