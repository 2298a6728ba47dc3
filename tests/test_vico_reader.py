"""The ViCo reader against files written in the official layout, and every bad input."""

from __future__ import annotations

import shutil
import sys
import types
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import scipy.io
import torch
from _vico_fixture import SR, driver_order, make_vico
from PIL import Image

import bench
from bench.contracts import Dataset, NormStats, Sample
from bench.data import formats, open_dataset
from bench.data.stats import compute_stats, write_stats
from bench.data.vico import ViCoDataset
from bench.errors import InputError
from bench.features.audio import audio_features


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("vico_template") / "ViCo"
    return root, make_vico(root)


@pytest.fixture
def vico(_template: tuple[Path, list], tmp_path: Path, bench_home: Path) -> tuple[Path, list]:
    """A fresh copy of a small ViCo folder (3 train clips of 10-12 frames, 1 val)."""
    root = tmp_path / "ViCo"
    shutil.copytree(_template[0], root)
    return root, _template[1]


def _pyav_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_samples_follow_the_contract(vico: tuple[Path, list]) -> None:
    root, clips = vico
    ds = ViCoDataset(root)
    assert isinstance(ds, Dataset)
    assert ds.splits() == ["train", "val"]
    talking = ds.samples("train", "talking")
    listening = ds.samples("train", "listening")
    assert [s.uuid for s in talking] == [c.uuid for c in clips[:3]]
    assert ds.problems == []
    for sample, clip in zip(talking, clips, strict=False):
        assert isinstance(sample, Sample)
        assert sample.role == "speaker" and sample.n_frames == clip.n_frames and sample.fps == 30
        gt = sample.gt_coeffs()
        assert gt is not None and gt.dtype == torch.float32
        np.testing.assert_array_equal(gt.numpy(), driver_order(clip.coeff["speaker"], clip.params["speaker"]))
        assert sample.speaker_coeffs() is None
        feats = sample.audio_features()
        assert feats.shape == (clip.n_frames, 43)
        np.testing.assert_allclose(feats.numpy(), audio_features((clip.audio, SR), clip.n_frames), atol=1e-4)
    assert [s.attitude for s in talking] == ["positive", "neutral", "negative"]
    sample, clip = listening[1], clips[1]
    assert sample.role == "listener"
    np.testing.assert_array_equal(sample.gt_coeffs().numpy(),  # type: ignore[union-attr]
                                  driver_order(clip.coeff["listener"], clip.params["listener"]))
    np.testing.assert_array_equal(sample.speaker_coeffs().numpy(),  # type: ignore[union-attr]
                                  driver_order(clip.coeff["speaker"], clip.params["speaker"]))


def test_frames_stream_and_reference(vico: tuple[Path, list]) -> None:
    root, _ = vico
    sample = ViCoDataset(root).samples("train", "listening")[2]
    batches = list(sample.gt_frames(4))
    assert [b.shape[0] for b in batches] == [4, 4, 4]  # 12 frames, streamed in batches
    frames = torch.cat(batches)
    reference = _pyav_frames(root / "videos" / f"{sample.uuid}.listener.mp4")
    np.testing.assert_allclose(frames.permute(0, 2, 3, 1).numpy(), reference / 255.0, atol=1e-6)
    ref = sample.reference_image()
    jpg = np.asarray(Image.open(root / "first_frames" / f"{sample.uuid}.listener.jpg").convert("RGB"))
    assert ref.shape == (3, 64, 64)
    np.testing.assert_allclose(ref.permute(1, 2, 0).numpy(), jpg / 255.0, atol=1e-6)
    (root / "first_frames" / f"{sample.uuid}.listener.jpg").unlink()
    fresh = ViCoDataset(root).samples("train", "listening")[2]
    torch.testing.assert_close(fresh.reference_image(), frames[0])


def test_full_layout_with_split_folders(tmp_path: Path, bench_home: Path) -> None:
    root = tmp_path / "full"
    clips = make_vico(root, full_layout=True, coeff_format="bin", splits={"test": 2})
    ds = ViCoDataset(root)
    assert ds.splits() == ["test"]
    samples = ds.samples("test", "listening")
    assert len(samples) == 2 and ds.problems == []
    assert samples[0].files.coeffs["speaker"] == root / "features/video_feats/test/test000.speaker.bin"
    np.testing.assert_array_equal(samples[1].speaker_coeffs().numpy(),  # type: ignore[union-attr]
                                  driver_order(clips[1].coeff["speaker"], clips[1].params["speaker"]))


def test_norm_stats_from_official_files(vico: tuple[Path, list]) -> None:
    root, clips = vico
    ds = ViCoDataset(root)
    with pytest.raises(InputError, match="bench data stats"):
        ds.norm_stats()
    write_stats(compute_stats(root), root)
    stats = ds.norm_stats()
    assert isinstance(stats, NormStats)
    train = [c for c in clips if c.split == "train"]
    coeffs = torch.from_numpy(np.concatenate(
        [driver_order(c.coeff[r], c.params[r]) for c in train for r in ("speaker", "listener")]))
    torch.testing.assert_close(stats.coeff_mean, coeffs.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.coeff_std, coeffs.std(0), atol=1e-5, rtol=1e-5)  # unbiased
    audio = torch.from_numpy(np.concatenate([audio_features((c.audio, SR), c.n_frames) for c in train]))
    torch.testing.assert_close(stats.audio_std, audio.std(0), atol=1e-4, rtol=1e-4)
    assert stats.audio_mean.shape == (43,)


def test_content_hash_is_content_keyed_and_cached(vico: tuple[Path, list],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = vico
    first = ViCoDataset(root).content_hash()
    import bench.paths

    def no_hashing(*args: object, **kwargs: object) -> str:
        raise AssertionError("re-hashed an unchanged folder")

    monkeypatch.setattr(bench.paths, "file_sha256", no_hashing)
    assert ViCoDataset(root).content_hash() == first
    monkeypatch.undo()
    wav = root / "audios" / "train000.wav"
    data = bytearray(wav.read_bytes())
    data[-1] ^= 1
    wav.write_bytes(bytes(data))
    assert ViCoDataset(root).content_hash() != first


def test_open_dataset_and_plugins(vico: tuple[Path, list], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = vico
    assert isinstance(open_dataset(root), ViCoDataset)
    assert isinstance(open_dataset(str(root)), ViCoDataset)
    loaded = bench.load("dataset", f"vico:{root}")
    assert isinstance(loaded, ViCoDataset) and loaded.root == root and loaded.name == "vico"
    fake = types.ModuleType("bench.data.synth")
    fake.ensure_vico_mini = lambda: root  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.data.synth", fake)
    mini = open_dataset("vico-mini")
    assert isinstance(mini, ViCoDataset) and mini.name == "vico-mini" and mini.root == root


# ----------------------------------------------------------------------- bad input


def _break(root: Path, case: str) -> tuple[str, str]:
    """Damage clip train001 in one way; returns (file name fragment, message fragment)."""
    u = "train001"
    if case == "missing_mp4":
        (root / "videos" / f"{u}.speaker.mp4").unlink()
        return f"{u}.speaker.mp4", "missing"
    if case == "truncated_mp4":
        p = root / "videos" / f"{u}.speaker.mp4"
        p.write_bytes(p.read_bytes()[:300])
        return f"{u}.speaker.mp4", ""
    if case == "missing_wav":
        (root / "audios" / f"{u}.wav").unlink()
        return f"{u}.wav", "missing"
    if case == "truncated_wav":
        p = root / "audios" / f"{u}.wav"
        p.write_bytes(p.read_bytes()[:44 + 2 * SR // 30])  # header + one frame of samples
        return f"{u}.wav", "truncated"
    if case == "garbage_wav":
        (root / "audios" / f"{u}.wav").write_bytes(b"not a wav at all")
        return f"{u}.wav", "unreadable"
    if case == "frame_mismatch":
        formats.write_video_feats(root / "video_feats" / f"{u}.speaker.bin",
                                  np.zeros((5, 73)), np.zeros((5, 187)))
        return f"{u}.speaker", "5 coefficient frames but the video has 11"
    if case == "nan_coeffs":
        bad = np.zeros((11, 257), np.float32)
        bad[3] = np.nan
        for stale in root.glob(f"*/{u}.speaker.*"):
            if stale.suffix in {".bin", ".mat"}:
                stale.unlink()
        scipy.io.savemat(root / "recons" / f"{u}.speaker.mat",
                         {"coeff": bad, "transform_params": np.zeros((11, 5), np.float32)})
        return f"{u}.speaker.mat", "NaN"
    if case == "wrong_shape":
        for stale in root.glob(f"*/{u}.speaker.*"):
            if stale.suffix in {".bin", ".mat"}:
                stale.unlink()
        import torch as _torch

        _torch.save({"angle.exp.trans": np.zeros((11, 70), np.float32)},
                    root / "video_feats" / f"{u}.speaker.bin")
        return f"{u}.speaker.bin", "(T,73)"
    if case == "first_frame_size":
        Image.new("RGB", (32, 40)).save(root / "first_frames" / f"{u}.speaker.jpg")
        return f"{u}.speaker.jpg", "first frame is 32x40, the video is 64x64"
    raise AssertionError(case)


CASES = ["missing_mp4", "truncated_mp4", "missing_wav", "truncated_wav", "garbage_wav",
         "frame_mismatch", "nan_coeffs", "wrong_shape", "first_frame_size"]


@pytest.mark.parametrize("case", CASES)
def test_bad_sample_is_reported_and_skipped(vico: tuple[Path, list], case: str) -> None:
    root, _ = vico
    where, what = _break(root, case)
    ds = ViCoDataset(root)
    with pytest.warns(UserWarning, match="skipped bad samples"):
        samples = ds.samples("train", "talking")
    assert [s.uuid for s in samples] == ["train000", "train002"]  # the rest still load
    assert ds.problems and where in str(ds.problems[0]) and what in str(ds.problems[0])
    strict = ViCoDataset(root, strict=True)
    with pytest.raises(InputError, match=where.replace(".", r"\.")):
        strict.samples("train", "talking")


def test_listening_needs_speaker_coeffs_only_talking_ignores_listener(vico: tuple[Path, list]) -> None:
    root, _ = vico
    for p in root.glob("*/train002.speaker.*"):
        if p.suffix in {".bin", ".mat"}:
            p.unlink()
    (root / "videos" / "train000.listener.mp4").unlink()
    ds = ViCoDataset(root)
    with pytest.warns(UserWarning):
        listening = ds.samples("train", "listening")
    assert [s.uuid for s in listening] == ["train001"]
    messages = " ".join(str(p) for p in ds.problems)
    assert "speaker coefficients missing" in messages and "train000.listener.mp4" in messages
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        talking = ds.samples("train", "talking")  # needs neither
    assert [s.uuid for s in talking] == ["train000", "train001", "train002"]
    assert talking[2].gt_coeffs() is None  # ground truth without coefficients is allowed


def test_bad_csv_and_unknown_split(vico: tuple[Path, list]) -> None:
    root, _ = vico
    (root / "val.csv").write_text("video_id,uuid,speaker_id,listener_id,attitude\n1,val000,a,b,angry\n")
    ds = ViCoDataset(root)
    with pytest.raises(InputError, match=r"val\.csv: row 2: unknown attitude 'angry'"):
        ds.samples("val", "talking")
    with pytest.raises(InputError, match="no split 'test'"):
        ds.samples("test", "talking")
    with pytest.raises(InputError, match="no split CSV"):
        ViCoDataset(root / "videos")
