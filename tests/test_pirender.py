"""PIRender renderer: official-architecture parity, checkpoint handling, streaming.

The oracle is ``tests/pirender_reference.py``, a plain transcription of the official
generator; checkpoints are random weights written here in the official format.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench
from bench.errors import InputError, MissingDependencyError

sys.path.insert(0, str(Path(__file__).parent))
from bench_plugins.renderers.pirender import (
    PIRenderRenderer,
    semantic_span,
    weights_status,
)
from bench_plugins.renderers.pirender_net import PIRenderGenerator
from pirender_reference import RefFaceGenerator, ref_warp, ref_windows

SIZE = 64  # the network needs multiples of 32; small keeps the CPU tests fast
SMALL = 32  # for tests that compare our own renderings with each other


def _random_generator(seed: int) -> RefFaceGenerator:
    torch.manual_seed(seed)
    model = RefFaceGenerator()
    with torch.no_grad():
        # default init leaves LayerNorm at identity; perturb it so its affine is exercised
        for _name, p in model.named_parameters():
            if p.dim() == 3 and p.shape[1:] == (1, 1):
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _save_official(path: Path, ema: dict[str, torch.Tensor], raw: dict[str, torch.Tensor]) -> Path:
    """The layout of the official checkpoint (util/trainer.py save_checkpoint)."""
    torch.save(
        {
            "net_G": raw,
            "net_G_ema": ema,
            "opt_G": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
            "sch_G": {"step_size": 1000000, "gamma": 1, "last_epoch": 190},
            "current_epoch": 190,
            "current_iteration": 400000,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def reference() -> RefFaceGenerator:
    return _random_generator(0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, reference: RefFaceGenerator) -> Path:
    raw = _random_generator(1).state_dict()  # net_G differs: loading it would break parity
    path = tmp_path_factory.mktemp("pirender") / "epoch_00190_iteration_000400000_checkpoint.pt"
    return _save_official(path, reference.state_dict(), raw)


def _driver_coeffs(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 73, generator=gen) * 0.5


def _pirender_order(driver: torch.Tensor) -> torch.Tensor:
    """Independent of bench.coeffs: exp 64 | angle 3 | trans 3 | crop 3."""
    return torch.cat([driver[:, 3:67], driver[:, 0:3], driver[:, 67:73]], 1)


def _source(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # a smooth image: warps of smooth content are comparable at the borders
    coarse = torch.rand(1, 3, 8, 8, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")[0]


def _reference_frames(model: RefFaceGenerator, source: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Official inference: one frame at a time, fp32, clamp, map [-1,1] -> [0,1]."""
    windows = ref_windows(_pirender_order(coeffs))
    image = source[None] * 2 - 1
    frames = []
    with torch.no_grad():
        for t in range(windows.shape[0]):
            fake = model(image, windows[t : t + 1])["fake_image"]
            frames.append((fake.clamp(-1, 1) + 1) / 2)
    return torch.cat(frames)


def _render(renderer: PIRenderRenderer, source: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    batches = list(renderer.render(source, coeffs))
    for b in batches:
        assert b.dtype == torch.float32 and b.dim() == 4 and b.shape[1:] == (3, *source.shape[1:])
    return torch.cat(batches)


def test_state_dict_matches_official_manifest(golden: Path) -> None:
    manifest = json.loads((golden / "state_dicts" / "pirender_net_G_ema.json").read_text())
    model = PIRenderGenerator()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == manifest
    assert len(shapes) == 304
    assert sum(math.prod(s) for s in shapes.values()) == 22_519_109


def test_parity_with_official_architecture(checkpoint: Path, reference: RefFaceGenerator) -> None:
    renderer = bench.load("renderer", "pirender", weights=checkpoint, batch_size=4, device="cpu")
    source, coeffs = _source(), _driver_coeffs(6)
    ours = _render(renderer, source, coeffs)
    expected = _reference_frames(reference, source, coeffs)
    assert ours.shape == expected.shape == (6, 3, SIZE, SIZE)
    assert (ours - expected).abs().max().item() < 1e-4
    assert expected.std() > 0.05  # the comparison is not between two flat images


def test_model_forward_matches_official_dict(checkpoint: Path, reference: RefFaceGenerator) -> None:
    """``.model(source [-1,1], semantics (B,73,27))`` is the official generator call."""
    renderer = PIRenderRenderer(weights=checkpoint, batch_size=2, device="cpu")
    windows = ref_windows(_pirender_order(_driver_coeffs(2, seed=4)))
    image = (_source(1)[None] * 2 - 1).expand(2, -1, -1, -1)
    with torch.no_grad():
        ours = renderer.model(image, windows)
        theirs = reference(image, windows)
    for key in ("flow_field", "warp_image", "fake_image"):
        assert (ours[key] - theirs[key]).abs().max().item() < 1e-4, key


def test_border_padding_differs_only_where_the_warp_leaves_the_image(checkpoint: Path) -> None:
    zeros = PIRenderRenderer(weights=checkpoint, device="cpu")
    border = bench.load("renderer", "pirender-border", weights=checkpoint, device="cpu")
    assert border.padding_mode == "border" and zeros.padding_mode == "zeros"
    assert "padding_mode" in border.render_options
    windows = ref_windows(_pirender_order(_driver_coeffs(3, seed=2)))
    image = (_source(2)[None] * 2 - 1).expand(3, -1, -1, -1)
    with torch.no_grad():
        out_zeros = zeros.model(image, windows)
        out_border = border.model(image, windows)
    flow = out_zeros["flow_field"]
    assert torch.equal(flow, out_border["flow_field"])  # padding only enters at the warp
    # where does each output pixel sample? (independent of the implementation's warp)
    probe = torch.ones(3, 1, SIZE, SIZE)
    inside = ref_warp(probe, flow, "zeros")  # 1 where all bilinear taps are in the image
    outside = inside < 1 - 1e-6
    diff = (out_zeros["warp_image"] - out_border["warp_image"]).abs().amax(1, keepdim=True)
    assert outside.any(), "random flow never leaves the image: the test would be vacuous"
    assert diff[~outside].max().item() < 1e-6
    assert diff[outside].max().item() > 1e-3
    # and border mode is the official warp with padding_mode='border'
    expected = ref_warp(image, flow, "border")
    assert (out_border["warp_image"] - expected).abs().max().item() < 1e-5


def test_bf16_is_within_40db_of_fp32(checkpoint: Path) -> None:
    source, coeffs = _source(3, SMALL), _driver_coeffs(4, seed=3)
    renderer = PIRenderRenderer(weights=checkpoint, batch_size=2, device="cpu", precision="bf16")
    bf16 = _render(renderer, source, coeffs)
    renderer.precision = "fp32"  # same weights, same batches
    fp32 = _render(renderer, source, coeffs)
    mse = torch.mean((fp32 - bf16) ** 2).item()
    psnr = 10 * math.log10(1 / max(mse, 1e-20))
    assert psnr >= 40, psnr
    assert mse > 0  # bf16 really ran


def test_batch_size_does_not_change_frames(checkpoint: Path) -> None:
    source, coeffs = _source(4, SMALL), _driver_coeffs(5, seed=5)
    renderer = PIRenderRenderer(weights=checkpoint, batch_size="auto", device="cpu")
    assert 1 <= renderer.batch_for(256, 256) <= 8
    renderer.batch_size = 1
    one = _render(renderer, source, coeffs)
    renderer.batch_size = 3
    batches = list(renderer.render(source, coeffs))
    assert [b.shape[0] for b in batches] == [3, 2]
    assert (torch.cat(batches) - one).abs().max().item() < 1e-5


@pytest.mark.parametrize(("n", "start", "stop"), [(1, 0, 1), (5, 0, 5), (40, 0, 8), (40, 16, 24), (40, 35, 40)])
def test_semantic_windows_are_clamped_official_windows(n: int, start: int, stop: int) -> None:
    semantics = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 73)
    span = semantic_span(semantics, start, stop)
    windows = span.unfold(1, 27, 1).permute(1, 0, 2)  # (stop-start, 73, 27)
    assert torch.equal(windows, ref_windows(semantics)[start:stop])
    first = windows[0, 0].tolist()
    assert first == [min(max(i, 0), n - 1) for i in range(start - 13, start + 14)]


def test_descriptors_of_a_span_equal_per_window_mapping(checkpoint: Path) -> None:
    model = PIRenderRenderer(weights=checkpoint, device="cpu").model
    semantics = _pirender_order(_driver_coeffs(30, seed=6))
    windows = ref_windows(semantics)
    with torch.no_grad():
        per_window = model.mapping_net(windows)[:, :, 0]
        spans = torch.cat([model.describe_sequence(semantic_span(semantics, a, min(30, a + 8)))
                           for a in range(0, 30, 8)])
    assert (per_window - spans).abs().max().item() < 1e-5


def test_missing_weights_say_where_to_get_them(bench_home: Path) -> None:
    status = weights_status()
    assert not status.present
    assert status.where.startswith(str(bench_home))
    assert "PIRender" in status.how
    with pytest.raises(MissingDependencyError) as info:
        bench.load("renderer", "pirender", device="cpu")
    message = str(info.value)
    assert "epoch_00190_iteration_000400000_checkpoint.pt" in message
    assert str(bench_home / "weights" / "pirender") in message
    assert "--renderer-weights" in message


def test_wrong_keys_are_listed(tmp_path: Path, reference: RefFaceGenerator) -> None:
    state = dict(reference.state_dict())
    state["editing_net.decoder.final.model.0.kernel"] = state.pop("editing_net.decoder.final.model.0.weight")
    del state["mapping_net.first.0.bias"]
    path = _save_official(tmp_path / "bad.pt", state, state)
    with pytest.raises(InputError) as info:
        PIRenderRenderer(weights=path, device="cpu")
    message = str(info.value)
    assert "missing keys: editing_net.decoder.final.model.0.weight, mapping_net.first.0.bias" in message
    assert "unexpected keys: editing_net.decoder.final.model.0.kernel" in message
    assert str(path) in message


def test_not_a_checkpoint_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="weights_only"):
        PIRenderRenderer(weights=path, device="cpu")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="net_G_ema"):
        PIRenderRenderer(weights=tmp_path / "other.pt", device="cpu")


def test_bad_options_are_config_errors(checkpoint: Path) -> None:
    with pytest.raises(bench.BenchError, match="fp16"):
        PIRenderRenderer(weights=checkpoint, device="cpu", precision="fp16")
    with pytest.raises(bench.BenchError, match="batch_size"):
        PIRenderRenderer(weights=checkpoint, device="cpu", batch_size=0)
    with pytest.raises(bench.BenchError, match="padding_mode"):
        PIRenderRenderer(weights=checkpoint, device="cpu", padding_mode="mirror")


_MEMORY_SCRIPT = """
import resource, sys, torch
from bench_plugins.renderers.pirender import PIRenderRenderer
torch.manual_seed(0)
renderer = PIRenderRenderer(weights=sys.argv[1], batch_size=8, device="cpu")
source = torch.rand(3, 32, 32)  # smallest size: the test is about clip length
list(renderer.render(source, torch.randn(30, 73) * 0.5))  # warm-up: allocator, kernels
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
total = 0.0
for frames in renderer.render(source, torch.randn(int(sys.argv[2]), 73) * 0.5):
    total += float(frames.sum())  # consume like a writer would
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, peak)
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_clip_length(checkpoint: Path) -> None:
    """60 s at 30 fps (1800 frames) peaks within 1.2x of 6 s (180 frames)."""
    peaks, growth = {}, {}
    for n in (180, 1800):
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(checkpoint), str(n)],
            check=True, capture_output=True, text=True,
        ).stdout.split()
        base, peaks[n] = int(out[0]), int(out[1])  # KiB
        growth[n] = peaks[n] - base
    assert peaks[1800] <= 1.2 * peaks[180], peaks
    # the totals include torch itself; holding the 1800 frames (22 MB at 32x32) would
    # show up here even though it is far below 20% of the process
    assert growth[1800] <= 1.2 * growth[180] + 5 * 1024, growth


def test_phase_upsampling_equals_nearest_upsample_then_conv_after_reloading() -> None:
    """The 2x2 phase kernels follow new weights (a frozen model can be reloaded)."""
    torch.manual_seed(0)
    model = PIRenderGenerator().freeze()
    model.load_state_dict(PIRenderGenerator().state_dict())  # new weights after freeze
    up = model.editing_net.decoder.up1
    x = torch.randn(2, 256, 8, 6)
    with torch.no_grad():
        naive = torch.nn.functional.conv2d(
            torch.nn.functional.interpolate(x, scale_factor=2), up.conv.weight, up.conv.bias, padding=1
        )
        expected = torch.nn.functional.leaky_relu(
            torch.nn.functional.layer_norm(naive, naive.shape[1:], up.norm.weight.expand(naive.shape[1:]),
                                           up.norm.bias.expand(naive.shape[1:])), 0.1
        )
        assert (up(x) - expected).abs().max().item() < 1e-4
