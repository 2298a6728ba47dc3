"""Fusion and border post-processors, chains, and planning-time renderer-option checks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from bench_plugins.postproc.fusion import FusionPostProcessor, gaussian_blur, windowed_median

import bench
from bench.errors import ConfigError, UnknownComponentError
from bench.postproc import (
    apply_chain,
    build_chain,
    chain_name,
    check_renderer_options,
    parse_chain,
    start_clip,
)

H = W = 32


class ConstantSegmenter:
    """Every pixel gets the same background probability."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls = 0

    def segment(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls += frames.shape[0]
        return torch.full((frames.shape[0], 1, *frames.shape[2:]), self.value)


class LookupSegmenter:
    """Masks fixed in advance per image, looked up by the image's exact content."""

    def __init__(self, table: dict[bytes, torch.Tensor]) -> None:
        self.table = table

    def segment(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.table[f.numpy().tobytes()] for f in frames])


def _clip(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, H, W, generator=g), torch.rand(n, 3, H, W, generator=g)


def _batches(frames: torch.Tensor, sizes: list[int]) -> Iterator[torch.Tensor]:
    start = 0
    for size in sizes:
        yield frames[start : start + size]
        start += size
    assert start == frames.shape[0]


# --- fusion: degenerate masks ---------------------------------------------------------


@pytest.mark.parametrize("setting", ["paper", "official"])
def test_all_zero_mask_returns_generated_frames(setting: str) -> None:
    ref, gen = _clip(0, 7)
    fusion = FusionPostProcessor(setting=setting, segmenter=ConstantSegmenter(0.0))
    fusion.start_clip(ref)
    out = torch.cat([fusion.process(b) for b in _batches(gen, [4, 3])])
    if setting == "official":  # the official code replaces frame 0 by the reference
        assert torch.equal(out[0], ref)
        out, gen = out[1:], gen[1:]
    assert torch.equal(out, gen)


@pytest.mark.parametrize("setting", ["paper", "official"])
def test_all_ones_mask_returns_reference(setting: str) -> None:
    ref, gen = _clip(1, 6)
    fusion = FusionPostProcessor(setting=setting, segmenter=ConstantSegmenter(1.0))
    fusion.start_clip(ref)
    out = torch.cat([fusion.process(b) for b in _batches(gen, [2, 4])])
    torch.testing.assert_close(out, ref.expand_as(out), atol=1e-6, rtol=0)


# --- fusion: against a straightforward per-frame reimplementation ---------------------


def _official_loop(ref: torch.Tensor, gen: torch.Tensor, bg_ref: torch.Tensor, bg_gen: torch.Tensor) -> torch.Tensor:
    """The authors' per-frame algorithm, written independently with torchvision blurs."""
    ma = (TF.gaussian_blur(bg_ref[None], [7, 7], [8.0, 8.0]) > 0.8).float()
    mask_list, out = [], []
    for t in range(gen.shape[0]):
        m = ma * (bg_gen[t][None] > 0.4).float()
        frame = gen[t][None]
        if t == 0:
            m, frame = ma, ref[None]
        mask_list.append(m)
        med = torch.median(torch.cat(mask_list[-5:]), 0)[0]
        med = TF.gaussian_blur(med[None], [5, 5], [8.0, 8.0])
        out.append(frame * (1 - med) + ref[None] * med)
    return torch.cat(out)


def _paper_loop(ref: torch.Tensor, gen: torch.Tensor, bg_ref: torch.Tensor, bg_gen: torch.Tensor) -> torch.Tensor:
    r = (bg_ref > 0.5).float()
    masks, out = [], []
    for t in range(gen.shape[0]):
        masks.append((bg_gen[t] > 0.5).float())
        window = torch.stack(masks[-5:])
        med = window.sort(0).values[(window.shape[0] - 1) // 2] * r  # lower median
        med = TF.gaussian_blur(med[None], [7, 7], [8.0, 8.0])
        out.append(gen[t][None] * (1 - med) + ref[None] * med)
    return torch.cat(out)


def _random_masks(seed: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, H, W, generator=g)


@pytest.mark.parametrize(("setting", "loop"), [("official", _official_loop), ("paper", _paper_loop)])
@pytest.mark.parametrize("sizes", [[11], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [3, 5, 2, 1], [6, 5]])
def test_fusion_matches_per_frame_reference(setting: str, loop, sizes: list[int]) -> None:
    ref, gen = _clip(2, 11)
    bg_ref = torch.rand(1, H, W, generator=torch.Generator().manual_seed(3)) * 0.4 + 0.6
    bg_gen = _random_masks(4, 11)
    table = {ref.numpy().tobytes(): bg_ref, **{g.numpy().tobytes(): m for g, m in zip(gen, bg_gen, strict=True)}}
    fusion = FusionPostProcessor(setting=setting, segmenter=LookupSegmenter(table))
    fusion.start_clip(ref)
    out = torch.cat([fusion.process(b) for b in _batches(gen, sizes)])
    torch.testing.assert_close(out, loop(ref, gen, bg_ref, bg_gen), atol=1e-6, rtol=0)


def test_median_window_resets_between_clips() -> None:
    ref_a, gen_a = _clip(5, 6)
    ref_b, gen_b = _clip(6, 6)
    masks = _random_masks(7, 12)
    table = {g.numpy().tobytes(): m for g, m in zip(torch.cat((gen_a, gen_b)), masks, strict=True)}
    table[ref_a.numpy().tobytes()] = torch.ones(1, H, W)
    table[ref_b.numpy().tobytes()] = torch.ones(1, H, W)

    shared = FusionPostProcessor(setting="paper", segmenter=LookupSegmenter(table))
    shared.start_clip(ref_a)
    shared.process(gen_a)
    shared.start_clip(ref_b)
    after_a = shared.process(gen_b)

    fresh = FusionPostProcessor(setting="paper", segmenter=LookupSegmenter(table))
    fresh.start_clip(ref_b)
    assert torch.equal(after_a, fresh.process(gen_b))
    # and the expectation is not vacuous: carrying clip A's window changes the result
    carried = FusionPostProcessor(setting="paper", segmenter=LookupSegmenter(table))
    carried.start_clip(ref_a)
    carried.process(gen_a)
    carried._reference = ref_b[None]  # swap the reference but keep the window
    assert not torch.equal(carried.process(gen_b), after_a)


def test_process_before_start_clip_fails() -> None:
    fusion = FusionPostProcessor(segmenter=ConstantSegmenter(0.0))
    with pytest.raises(RuntimeError, match="start_clip"):
        fusion.process(torch.rand(1, 3, H, W))


@pytest.mark.parametrize("setting", ["paper", "official"])
def test_one_segmentation_per_frame_and_reference_once(setting: str) -> None:
    seg = ConstantSegmenter(0.7)
    fusion = FusionPostProcessor(setting=setting, segmenter=seg)
    for clip in range(2):
        ref, gen = _clip(10 + clip, 9)
        fusion.start_clip(ref)
        for batch in _batches(gen, [4, 4, 1]):
            fusion.process(batch)
    # official skips frame 0 (it is the reference), paper segments every frame
    per_clip = 1 + (8 if setting == "official" else 9)
    assert seg.calls == fusion.frames_segmented == 2 * per_clip


def test_gaussian_blur_matches_torchvision() -> None:
    x = torch.rand(3, 1, 20, 17, generator=torch.Generator().manual_seed(8))
    for k, s in ((5, 8.0), (7, 8.0), (7, 1.4)):
        torch.testing.assert_close(gaussian_blur(x, k, s), TF.gaussian_blur(x, [k, k], [s, s]),
                                   atol=1e-6, rtol=0)


def test_windowed_median_is_lower_median_of_available_masks() -> None:
    seq = torch.rand(7, 1, 4, 4, generator=torch.Generator().manual_seed(9))
    out = windowed_median(seq[:0], seq, 5)
    for t in range(7):
        expected = torch.median(seq[max(0, t - 4) : t + 1], 0).values
        assert torch.equal(out[t], expected)


def test_unknown_setting_and_option() -> None:
    with pytest.raises(ConfigError, match="paper"):
        FusionPostProcessor(setting="fancy", segmenter=ConstantSegmenter(0.0))
    with pytest.raises(ConfigError, match="unknown option"):
        FusionPostProcessor(segmenter=ConstantSegmenter(0.0), blurr=3)


# --- segmenter identity: recorded, never silently replaced ----------------------------


def test_fusion_records_registered_segmenter() -> None:
    fusion = bench.load("postproc", "fusion", segmenter="reference-diff")
    assert fusion.segmenter_name == "reference-diff"
    assert fusion.describe() == {"setting": "official", "segmenter": "reference-diff",
                                 "segmenter_id": "reference-diff"}


def test_unknown_segmenter_is_an_error_not_a_fallback() -> None:
    with pytest.raises(UnknownComponentError, match="u2netp-offline"):
        bench.load("postproc", "fusion", segmenter="u2netq")


def test_missing_u2net_weights_fail_fusion(bench_home) -> None:
    from bench.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="u2net_human_seg.pth") as info:
        bench.load("postproc", "fusion", segmenter="u2net")
    assert "u2netp-offline" in str(info.value)  # the fix names the alternatives


# --- reference-diff -------------------------------------------------------------------


def test_reference_diff_segments_changed_region() -> None:
    seg = bench.load("segmenter", "reference-diff")
    ref = torch.full((3, H, W), 0.5)
    seg.set_reference(ref)
    frame = ref.clone()
    frame[:, 8:20, 10:22] = 1.0  # a moved "head"
    frame[:, 0, 0] = 1.0  # a speck, removed by the opening
    masks = seg.segment(torch.stack((ref, frame)))
    assert masks.shape == (2, 1, H, W)
    assert torch.all(masks[0] == 1)
    assert torch.all(masks[1, 0, 10:18, 12:20] == 0)
    assert masks[1, 0, 0, 0] == 1 and masks[1, 0, 28, 28] == 1


# --- border and chains ----------------------------------------------------------------


def test_border_requests_padding_mode_and_passes_frames() -> None:
    border = bench.load("postproc", "border")
    assert dict(border.renderer_options) == {"padding_mode": "border"}
    frames = torch.rand(2, 3, H, W)
    border.start_clip(frames[0])
    assert border.process(frames) is frames


def test_parse_chain() -> None:
    assert parse_chain("fusion+border") == ["fusion", "border"]
    assert parse_chain("border+fusion") == ["border", "fusion"]
    assert parse_chain("") == parse_chain("none") == parse_chain(None) == []
    assert chain_name(["fusion", "border"]) == "fusion+border" and chain_name([]) == "none"
    with pytest.raises(ConfigError, match="twice"):
        parse_chain("fusion+fusion")
    with pytest.raises(ConfigError, match="empty"):
        parse_chain("fusion+")


def test_build_chain_in_order_with_options() -> None:
    chain = build_chain(["border", "fusion"], device="cpu",
                        fusion={"setting": "paper", "segmenter": "reference-diff"})
    assert [c.registered_name for c in chain] == ["border", "fusion"]
    assert chain[1].setting.name == "paper"
    with pytest.raises(ConfigError, match="not in the chain"):
        build_chain(["border"], fusion={"setting": "paper"})
    with pytest.raises(UnknownComponentError, match="fusion"):
        build_chain(["fusoin"])


def test_planning_fails_for_renderer_without_padding_mode() -> None:
    chain = build_chain(["fusion", "border"], fusion={"segmenter": "reference-diff"})
    assert check_renderer_options(chain, "pirender", {"padding_mode"}) == {"padding_mode": "border"}
    with pytest.raises(ConfigError) as info:
        check_renderer_options(chain, "rig", frozenset())
    assert "'border'" in str(info.value) and "'rig'" in str(info.value)
    assert "padding_mode" in str(info.value)
    # fusion alone needs nothing from the renderer
    assert check_renderer_options(chain[:1], "rig", frozenset()) == {}


def test_conflicting_renderer_requests() -> None:
    class Zeros:
        registered_name = "zeros"
        renderer_options: ClassVar[dict[str, str]] = {"padding_mode": "zeros"}

    with pytest.raises(ConfigError, match="different"):
        check_renderer_options([bench.load("postproc", "border"), Zeros()], "pirender", {"padding_mode"})


# --- acceptance on a synthetic scene --------------------------------------------------


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / torch.mean((a - b) ** 2).item())


def _synthetic_scene(n: int = 12, size: int = 64) -> tuple[torch.Tensor, ...]:
    """A talking "head" over a smooth background, rendered with a distorting warp.

    Returns (reference, ground truth (n,3,H,W), rendered (n,3,H,W), true background
    masks (n,1,H,W)). The head (a disk with a mouth that opens and closes) sways a
    little; the "renderer" draws it correctly but warps the background with a
    smooth, time-varying displacement of up to ~6 px, as a warping renderer does.
    """
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    background = torch.stack((0.5 + 0.3 * torch.sin(3 * xs + 2 * ys), 0.5 + 0.3 * torch.cos(4 * ys),
                              0.4 + 0.2 * xs * ys))
    base = torch.stack((xs * 2 - 1, ys * 2 - 1), -1)
    gts, renders, masks = [], [], []
    for t in range(n):
        cx = 0.5 + 0.02 * math.sin(t / 2)
        head = (((xs - cx) ** 2 + (ys - 0.55) ** 2) < 0.06).float()
        mouth = ((xs - cx).abs() < 0.1).float() * ((ys - 0.65).abs() < 0.03 + 0.03 * abs(math.sin(t))).float()
        face = torch.stack((0.9 - 0.6 * mouth, 0.2 + 0.5 * ys, 0.1 + 0.3 * mouth))
        gts.append(background * (1 - head) + face * head)
        shift = 0.2 * math.sin(t + 1) * torch.stack((torch.sin(4 * ys), torch.cos(3 * xs)), -1)
        warped = F.grid_sample(background[None], (base + shift)[None], align_corners=True,
                               padding_mode="border")[0]
        renders.append(warped * (1 - head) + face * head)
        masks.append(1 - head[None])
    return gts[0], torch.stack(gts), torch.stack(renders), torch.stack(masks)


@pytest.mark.parametrize("setting", ["paper", "official"])
def test_fusion_raises_psnr_on_distorted_background(setting: str) -> None:
    """With correct human masks (what U2Net provides on real heads), fusion repairs the
    warped background: PSNR against ground truth rises by several dB."""
    ref, gt, rendered, true_bg = _synthetic_scene()
    # the oracle is keyed by frame content: the reference and the rendered frames
    table = {ref.numpy().tobytes(): true_bg[0]}
    table.update({r.numpy().tobytes(): m for r, m in zip(rendered, true_bg, strict=True)})
    fusion = FusionPostProcessor(setting=setting, segmenter=LookupSegmenter(table))
    start_clip([fusion], ref)
    fused = torch.cat([apply_chain([fusion], b) for b in _batches(rendered, [5, 7])])
    before, after = _psnr(rendered, gt), _psnr(fused, gt)
    assert after > before + 3.0, (before, after)


# --- throughput -----------------------------------------------------------------------


@pytest.mark.benchmark
@pytest.mark.parametrize(
    "segmenter",
    ["reference-diff", pytest.param("u2netp-offline", marks=pytest.mark.slow)],
)
def test_benchmark_fusion_fps(benchmark, segmenter: str, bench_home) -> None:
    """Fusion frames/s at 256x256, batch 16 (fps = 16 / mean time)."""
    if segmenter == "u2netp-offline":
        pytest.importorskip("rembg")
    torch.manual_seed(0)
    fusion = bench.load("postproc", "fusion", segmenter=segmenter)
    ref = torch.rand(3, 256, 256)
    frames = torch.rand(16, 3, 256, 256)
    fusion.start_clip(ref)
    fusion.process(frames[:1])  # past the frame-0 special case
    out = benchmark(fusion.process, frames)
    assert out.shape == frames.shape
