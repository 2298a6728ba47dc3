"""lmd, lmd-full, FDs, csim and cpbd: checked against independent computations and real faces."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from bench_plugins.metrics import cpbd as cpbd_module
from bench_plugins.metrics import fd as fd_module
from bench_plugins.metrics import lmd as lmd_module
from bench_plugins.metrics._imageops import rgb_to_gray_uint8, to_uint8_hwc

import bench
from bench.errors import InputError, MissingDependencyError

HAS_DLIB = importlib.util.find_spec("dlib") is not None and (
    importlib.util.find_spec("face_recognition_models") is not None
)
needs_dlib = pytest.mark.skipif(
    not HAS_DLIB, reason="dlib-bin / face_recognition_models not installed"
)


def _resize(image: np.ndarray, size: int = 256) -> torch.Tensor:
    """(H,W[,3]) uint8 -> (1,3,size,size) float in [0,1]."""
    x = torch.from_numpy(np.ascontiguousarray(image)).float().div(255)
    x = x[None].repeat(3, 1, 1) if x.ndim == 2 else x.permute(2, 0, 1)
    return torch.nn.functional.interpolate(x[None], size=(size, size), mode="area")


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    return _resize(skimage_data.astronaut())


@pytest.fixture(scope="module")
def cameraman_face() -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    return _resize(skimage_data.camera()[80:240, 160:320])


# --------------------------------------------------------------------------- LMD, stub landmarker


class TableLandmarker:
    """Landmarks looked up by a frame's constant grey level (the frame's id)."""

    cache_id = "table-v1"
    backend = "table"

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.calls = 0

    def detect(self, frames: torch.Tensor) -> np.ndarray:
        self.calls += 1
        ids = to_uint8_hwc(frames)[:, 0, 0, 0].astype(int)
        return self.table[ids].copy()


def _frames_with_ids(ids: list[int]) -> torch.Tensor:
    return torch.stack([torch.full((3, 8, 8), i / 255.0) for i in ids])


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> TableLandmarker:
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 256, size=(40, 68, 2))
    points[7] = np.nan  # frame id 7 has no face
    points[8] = np.nan
    stub = TableLandmarker(points)
    monkeypatch.setattr(lmd_module, "shared_landmarker", lambda backend, **_: stub)
    return stub


def _numpy_lmd(table: np.ndarray, pd_ids: list[int], gt_ids: list[int], points: slice) -> float:
    """The challenge's loop: per frame np.abs(pd - gt) on the kept points, mean over everything."""
    values = []
    for p, g in zip(pd_ids, gt_ids, strict=True):
        pd, gt = table[p], table[g]
        if np.isnan(gt).any() or np.isnan(pd).any():
            continue
        values.append(np.abs(pd[points] - gt[points]))
    return float(np.array(values).mean())


@pytest.mark.parametrize(("name", "points"), [("lmd", slice(48, 68)), ("lmd-full", slice(0, 68))])
def test_lmd_matches_numpy_and_counts_missing_faces(
    table: TableLandmarker, bench_home: Path, name: str, points: slice
) -> None:
    pd_ids, gt_ids = [1, 2, 3, 7, 4, 5], [10, 11, 12, 13, 8, 14]
    metric = bench.load("metric", name)
    metric.update(frames=_frames_with_ids(pd_ids[:3]), gt_frames=_frames_with_ids(gt_ids[:3]))
    metric.update(frames=_frames_with_ids(pd_ids[3:]), gt_frames=_frames_with_ids(gt_ids[3:]))
    out = metric.compute()
    assert out[name] == pytest.approx(_numpy_lmd(table.table, pd_ids, gt_ids, points), rel=1e-12)
    assert out[f"{name}_no_face_frames"] == 1  # id 7: generated frame without a face
    assert out[f"{name}_no_face_gt_frames"] == 1  # id 8: ground truth without a face
    assert metric.higher_is_better is False and metric.label == "landmarker=dlib"


def test_lmd_merging_clip_states_equals_one_pass(table: TableLandmarker, bench_home: Path) -> None:
    pd_ids, gt_ids = [1, 2, 3, 4, 5, 6], [11, 12, 13, 14, 15, 16]
    whole = bench.load("metric", "lmd")
    whole.update(frames=_frames_with_ids(pd_ids), gt_frames=_frames_with_ids(gt_ids))
    states = []
    for half in (slice(0, 2), slice(2, 6)):
        part = bench.load("metric", "lmd")
        part.update(frames=_frames_with_ids(pd_ids[half]), gt_frames=_frames_with_ids(gt_ids[half]))
        states.append(part.state())
    assert whole.compute_state(whole.merge(states)) == whole.compute()


def test_lmd_caches_ground_truth_landmarks(table: TableLandmarker, bench_home: Path) -> None:
    gt = _frames_with_ids([11, 12])
    metric = bench.load("metric", "lmd")
    metric.update(frames=_frames_with_ids([1, 2]), gt_frames=gt, gt_key="clip-a:0-2")
    calls = table.calls
    metric.update(frames=_frames_with_ids([1, 2]), gt_frames=gt, gt_key="clip-a:0-2")
    assert table.calls == calls + 1  # only the generated frames were detected again
    assert len(list((bench_home / "cache" / "landmarks" / "table-v1").glob("*.npy"))) == 1
    assert metric.compute()["lmd"] == pytest.approx(
        _numpy_lmd(table.table, [1, 2], [11, 12], slice(48, 68))
    )


def test_lmd_rejects_bad_frames(table: TableLandmarker, bench_home: Path) -> None:
    metric = bench.load("metric", "lmd")
    with pytest.raises(InputError, match="differ in size or count"):
        metric.update(frames=_frames_with_ids([1, 2]), gt_frames=_frames_with_ids([1]))
    bad = _frames_with_ids([1])
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        metric.update(frames=bad, gt_frames=_frames_with_ids([1]))
    with pytest.raises(InputError, match="empty split"):
        metric.compute()


def test_lmd_without_any_face_is_nan_with_counts(table: TableLandmarker, bench_home: Path) -> None:
    metric = bench.load("metric", "lmd")
    metric.update(frames=_frames_with_ids([7]), gt_frames=_frames_with_ids([1]))
    out = metric.compute()
    assert np.isnan(out["lmd"]) and out["lmd_no_face_frames"] == 1


# --------------------------------------------------------------------------- LMD, real dlib


@needs_dlib
def test_dlib_landmarker_on_a_real_face(astronaut: torch.Tensor, bench_home: Path) -> None:
    landmarker = bench.load("landmarker", "dlib")
    points = landmarker.detect(torch.cat([astronaut, torch.zeros_like(astronaut)]))
    assert points.shape == (2, 68, 2)
    assert np.isfinite(points[0]).all() and np.isnan(points[1]).all()
    face = points[0]
    # Plausible geometry: the face sits in the upper middle, mouth below the eyes, chin lowest.
    assert 60 < face[:, 0].mean() < 140 and 20 < face[:, 1].mean() < 100
    assert face[48:68, 1].mean() > face[36:48, 1].mean()
    assert face[8, 1] == face[:, 1].max()


@needs_dlib
def test_dlib_lmd_is_zero_on_itself_and_the_shift_on_a_shifted_copy(
    astronaut: torch.Tensor, bench_home: Path
) -> None:
    dx, dy = 5, 3
    shifted = torch.roll(astronaut, shifts=(dy, dx), dims=(2, 3))
    same = bench.load("metric", "lmd-full")
    same.update(frames=astronaut, gt_frames=astronaut)
    assert same.compute()["lmd-full"] == 0.0
    moved = bench.load("metric", "lmd-full")
    moved.update(frames=shifted, gt_frames=astronaut)
    # Per-coordinate mean absolute difference: (|dx| + |dy|) / 2 for a pure translation.
    assert moved.compute()["lmd-full"] == pytest.approx((dx + dy) / 2, abs=0.5)
    blank = bench.load("metric", "lmd")
    blank.update(frames=torch.zeros_like(astronaut), gt_frames=astronaut)
    assert blank.compute()["lmd_no_face_frames"] == 1


def test_fan_without_weights_says_where_to_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench_plugins.metrics import landmarks

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    status = landmarks.fan_weights()
    assert not status.present
    assert (
        str(tmp_path / "torch" / "hub" / "checkpoints" / "2DFAN4-11f355bf06.pth.tar") in status.how
    )


# --------------------------------------------------------------------------- FDs


def _coeffs(seed: int, n: int) -> torch.Tensor:
    return torch.randn(n, 73, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("name", "columns"),
    [("expfd", slice(3, 67)), ("anglefd", slice(0, 3)), ("transfd", slice(67, 70))],
)
def test_fds_match_numpy_pooled_over_frames(name: str, columns: slice) -> None:
    clips = [(_coeffs(1, 10), _coeffs(2, 10)), (_coeffs(3, 25), _coeffs(4, 25))]
    metric = bench.load("metric", name)
    assert (metric.label, metric.frame_level, metric.higher_is_better) == (
        "source=driver",
        False,
        False,
    )
    states = []
    for pd, gt in clips:
        metric.reset()
        metric.update(coeffs=pd, gt_coeffs=gt)
        states.append(metric.state())
    pd_all = np.concatenate([c[0].numpy() for c in clips]).astype(np.float64)
    gt_all = np.concatenate([c[1].numpy() for c in clips]).astype(np.float64)
    expected = np.abs(pd_all[:, columns] - gt_all[:, columns]).sum() / (
        len(pd_all) * (columns.stop - columns.start)
    )
    assert metric.compute_state(metric.merge(states))[name] == pytest.approx(expected, rel=1e-12)
    one_pass = bench.load("metric", name)
    for pd, gt in clips:
        one_pass.update(coeffs=pd, gt_coeffs=gt)
    assert one_pass.compute()[name] == metric.compute_state(metric.merge(states))[name]


def test_fds_reject_bad_coefficients() -> None:
    metric = bench.load("metric", "expfd")
    with pytest.raises(InputError, match="10 predicted frames vs 9"):
        metric.update(coeffs=_coeffs(0, 10), gt_coeffs=_coeffs(1, 9))
    with pytest.raises(InputError, match=r"\(T,73\)"):
        metric.update(coeffs=torch.zeros(4, 70), gt_coeffs=torch.zeros(4, 70))
    bad = _coeffs(0, 3)
    bad[1, 5] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        metric.update(coeffs=bad, gt_coeffs=_coeffs(1, 3))


def test_fd_with_a_video_extractor_scores_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    class MeanColour:
        """A toy 'reconstructor': coefficient k = mean of channel k % 3."""

        source = "video"

        def extract(self, frames: torch.Tensor) -> torch.Tensor:
            means = frames.mean(dim=(2, 3))
            return means[:, torch.arange(73) % 3]

    real_load = bench.load
    monkeypatch.setattr(
        bench,
        "load",
        lambda kind, name, **kw: (
            MeanColour() if kind == "coeff_extractor" else real_load(kind, name, **kw)
        ),
    )
    metric = fd_module.coefficient_distance("anglefd", extractor="toy")
    assert metric.frame_level and metric.label == "source=video:toy"
    frames, gt = torch.full((2, 3, 4, 4), 0.25), torch.full((2, 3, 4, 4), 0.75)
    metric.update(frames=frames, gt_frames=gt)
    assert metric.compute()["anglefd"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- CPBD


def test_gray_conversion_is_bit_exact_with_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    rgb = np.random.default_rng(0).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    assert np.array_equal(rgb_to_gray_uint8(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def _blurred_astronaut_grays() -> list[np.ndarray]:
    skimage_data = pytest.importorskip("skimage.data")
    from skimage import color, filters

    gray = np.round(color.rgb2gray(skimage_data.astronaut()[:256, 128:384]) * 255)
    return [gray] + [
        np.round(filters.gaussian(gray, sigma=s, preserve_range=True)) for s in (0.7, 1.5, 3.0)
    ]


def test_cpbd_orders_images_by_blur() -> None:
    values = [cpbd_module.cpbd(image.astype(np.uint8)) for image in _blurred_astronaut_grays()]
    assert all(a > b for a, b in itertools.pairwise(values)), values
    assert 0 <= values[-1] < values[0] <= 1
    assert cpbd_module.cpbd(np.full((128, 128), 90, dtype=np.uint8)) == 0.0  # no edges at all


def _import_reference_cpbd() -> Any:
    """PyPI cpbd 1.0.7 imports ``scipy.ndimage.imread`` (removed in SciPy 1.2): shim it."""
    if importlib.util.find_spec("cpbd") is None:
        pytest.skip("PyPI cpbd not installed (pip install cpbd --no-deps)")
    import scipy.ndimage

    if not hasattr(scipy.ndimage, "imread"):
        scipy.ndimage.imread = None  # only the CLI entry point used it
    import cpbd

    return cpbd


def test_cpbd_matches_the_pypi_package() -> None:
    reference = _import_reference_cpbd()
    rng = np.random.default_rng(0)
    images = [*_blurred_astronaut_grays(), rng.integers(0, 256, size=(128, 192)).astype(float)]
    for image in images:
        image_u8 = image.astype(np.uint8)
        assert cpbd_module.cpbd(image_u8) == pytest.approx(reference.compute(image_u8), abs=1e-12)


def test_cpbd_metric_pools_frames_and_merges() -> None:
    frames = torch.stack([_resize(g.astype(np.uint8), 128)[0] for g in _blurred_astronaut_grays()])
    metric = bench.load("metric", "cpbd")
    states = []
    for half in (frames[:1], frames[1:]):
        metric.reset()
        metric.update(frames=half)
        states.append(metric.state())
    gray = rgb_to_gray_uint8(to_uint8_hwc(frames))
    expected = np.mean([cpbd_module.cpbd(g) for g in gray])
    assert metric.compute_state(metric.merge(states))["cpbd"] == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- CSIM


@needs_dlib
def test_csim_dlib_same_identity_is_high_and_others_lower(
    astronaut: torch.Tensor, cameraman_face: torch.Tensor, bench_home: Path
) -> None:
    mirrored = astronaut.flip(3)
    same = bench.load("metric", "csim")
    same.update(frames=astronaut, gt_frames=astronaut)
    assert same.compute()["csim"] == pytest.approx(1.0, abs=1e-9)
    mirror = bench.load("metric", "csim")
    mirror.update(frames=mirrored, gt_frames=astronaut)
    other = bench.load("metric", "csim")
    other.update(frames=cameraman_face, gt_frames=astronaut)
    assert mirror.compute()["csim"] > 0.97
    assert other.compute()["csim"] < mirror.compute()["csim"] - 0.1
    assert other.compute()["csim_no_face_frames"] == 0


@needs_dlib
def test_csim_is_sklearns_all_pairs_mean_and_merges(
    astronaut: torch.Tensor, cameraman_face: torch.Tensor, bench_home: Path
) -> None:
    pairwise = pytest.importorskip("sklearn.metrics.pairwise")
    pd = torch.cat([astronaut, cameraman_face, astronaut.flip(3)])
    gt = torch.cat([astronaut, astronaut, cameraman_face])
    metric = bench.load("metric", "csim")
    states = []
    for part in (slice(0, 1), slice(1, 3)):
        metric.reset()
        metric.update(frames=pd[part], gt_frames=gt[part])
        states.append(metric.state())
    out = metric.compute_state(metric.merge(states))
    embed = metric.embedder.embed
    gt_feats, pd_feats = embed(gt), embed(pd)
    # The challenge: cosine_similarity(gt_feats, pd_feats).mean() over the whole split.
    assert out["csim"] == pytest.approx(
        pairwise.cosine_similarity(gt_feats, pd_feats).mean(), rel=1e-9
    )
    assert out["csim_paired"] == pytest.approx(
        np.mean(np.sum(gt_feats * pd_feats, axis=1)), rel=1e-9
    )


def test_arcface_iresnet100_layout_and_loading(tmp_path: Path) -> None:
    from bench_plugins.metrics import face_embed

    net = face_embed.build_iresnet()
    state = net.state_dict()
    # Names and shapes of insightface arcface_torch's iresnet100 ("r100") checkpoints.
    expected = {
        "conv1.weight": (64, 3, 3, 3),
        "prelu.weight": (64,),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer2.12.conv2.weight": (128, 128, 3, 3),
        "layer3.29.bn3.running_var": (256,),
        "layer4.2.prelu.weight": (512,),
        "bn2.weight": (512,),
        "fc.weight": (512, 512 * 7 * 7),
        "features.running_mean": (512,),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert "layer3.30.bn1.weight" not in state and "layer2.13.bn1.weight" not in state
    n_params = sum(p.numel() for p in net.parameters())
    assert 65.0e6 < n_params < 65.3e6  # iresnet100: 65.1M parameters
    with pytest.raises(MissingDependencyError, match="r100.pth"):
        face_embed.ArcFaceEmbedder(weights=str(tmp_path / "r100.pth"))


@pytest.mark.slow
def test_arcface_embedder_loads_a_checkpoint_and_embeds_as_the_challenge(tmp_path: Path) -> None:
    from bench_plugins.metrics import face_embed

    net = face_embed.build_iresnet()
    with pytest.raises(MissingDependencyError, match="r100.pth"):
        face_embed.ArcFaceEmbedder(weights=str(tmp_path / "r100.pth"))
    torch.manual_seed(0)
    for module in net.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), tmp_path / "r100.pth")
    embedder = face_embed.ArcFaceEmbedder(weights=str(tmp_path / "r100.pth"), device="cpu")
    frames = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    embeddings = embedder.embed(frames)
    assert embeddings.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-9)
    # Same pixels as the challenge: cv2 resize to 112, then (x/255 - 0.5) / 0.5.
    images = face_embed.resize_112(to_uint8_hwc(frames))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    with torch.no_grad():
        direct = net.eval()(x).double().numpy()
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings, direct, atol=1e-5)


@needs_dlib
def test_dlib_backends_report_their_files_and_reject_bad_options() -> None:
    from bench.errors import ConfigError

    entries = {(e.kind, e.name): e for e in bench.available()}
    for key in (("landmarker", "dlib"), ("face_embedder", "dlib")):
        status = entries[key].weights_status()
        assert status is not None and status.present and Path(status.where).is_file()
    with pytest.raises(ConfigError, match="upsample"):
        bench.load("landmarker", "dlib", upsample="twice")


class _FakeFaceAlignment:
    """Stands in for face_alignment.FaceAlignment: records its options, returns set landmarks."""

    options: ClassVar[dict[str, Any]] = {}
    fail: ClassVar[Exception | None] = None

    def __init__(self, landmarks_type: Any, **options: Any) -> None:
        if _FakeFaceAlignment.fail is not None:
            raise _FakeFaceAlignment.fail
        _FakeFaceAlignment.options = {"landmarks_type": landmarks_type, **options}

    def get_landmarks_from_image(self, image: np.ndarray) -> list[np.ndarray] | None:
        if image.max() == 0:
            return None  # face-alignment returns None when no face is found
        first = np.full((68, 2), float(image[0, 0, 0]))
        return [first, first + 100]


def test_fan_landmarker_uses_the_challenges_settings_and_first_face(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import face_alignment
    from bench_plugins.metrics import landmarks

    monkeypatch.setattr(face_alignment, "FaceAlignment", _FakeFaceAlignment)
    monkeypatch.setattr(_FakeFaceAlignment, "fail", None)
    fan = landmarks.FanLandmarker(device="cpu")
    opts = _FakeFaceAlignment.options
    assert opts["landmarks_type"] == face_alignment.LandmarksType.TWO_D
    assert (opts["flip_input"], opts["compile"], opts["device"]) == (True, False, "cpu")
    frames = torch.stack([torch.full((3, 8, 8), 40 / 255), torch.zeros(3, 8, 8)])
    points = fan.detect(frames)
    assert points.shape == (2, 68, 2)
    assert np.all(points[0] == 40) and np.isnan(points[1]).all()

    monkeypatch.setattr(
        _FakeFaceAlignment, "fail", OSError("urlopen error: Name or service not known")
    )
    with pytest.raises(MissingDependencyError, match="hub/checkpoints"):
        landmarks.FanLandmarker(device="cpu")


def test_fds_without_ground_truth_coefficients_say_so() -> None:
    metric = bench.load("metric", "transfd")
    with pytest.raises(InputError, match="no ground-truth coefficients"):
        metric.update(coeffs=_coeffs(0, 4), gt_coeffs=None)
    with pytest.raises(InputError, match="empty split"):
        metric.compute()


def test_gt_cache_accepts_any_key_string(bench_home: Path) -> None:
    """The harness's gt_key holds '/' and ':'; the cache must not treat them as folders."""
    from bench_plugins.metrics._imageops import cached_array

    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.arange(6.0).reshape(2, 3)

    key = "abcd/uuid-1.speaker/0:32"
    first = cached_array(("test",), key, (2, 3), compute)
    second = cached_array(("test",), key, (2, 3), compute)
    assert np.array_equal(first, second) and len(calls) == 1


def test_dlib_landmarker_loads_its_models_on_first_detect(bench_home: Path) -> None:
    """Planning (and skipping finished cells) builds metrics for their backend and cache
    ids; the 68-point predictor is only read when frames are detected."""
    import torch
    from bench_plugins.metrics.landmarks import DlibLandmarker

    landmarker = DlibLandmarker()
    assert landmarker.cache_id.startswith("dlib-v") and landmarker._models is None
    landmarker.detect(torch.zeros(1, 3, 32, 32))
    assert landmarker._models is not None
