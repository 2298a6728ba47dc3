"""vico-mini: determinism, the official layout read back with scipy/torch/csv, GT reproducible
with rig + compositing, audio-driven motion, and the cached first-use generation."""

from __future__ import annotations

import csv
import hashlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from scipy.io import wavfile

from bench.data import synth
from bench.video import probe, read_frames

SMALL: dict[str, Any] = {"n_pairs": 3, "seconds": (1.0, 1.5), "n_identities": 3}


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.synthesize(tmp_path_factory.mktemp("mini") / "vico-mini", seed=0, progress=False,
                            workers=1, **SMALL)


def _rows(root: Path, split: str) -> list[dict[str, str]]:
    with open(root / f"{split}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _all_rows(root: Path) -> list[dict[str, str]]:
    return [row for split in ("train", "val", "test") for row in _rows(root, split)]


def _driver_order(mat: dict) -> np.ndarray:
    """Independent restatement of SPEC 2: angle 224:227 | exp 80:144 | trans 254:257 | crop."""
    coeff, params = mat["coeff"], mat["transform_params"]
    return np.concatenate([coeff[:, 224:227], coeff[:, 80:144], coeff[:, 254:257], params[:, 2:5]], 1)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * math.log10(np.mean((a - b) ** 2) + 1e-12))


@pytest.fixture(scope="module")
def small_again(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.synthesize(tmp_path_factory.mktemp("mini2") / "vico-mini", seed=0, progress=False,
                            workers=1, **SMALL)


def _flatten(obj: object) -> list[np.ndarray]:
    if isinstance(obj, dict):
        return [a for key in sorted(obj) for a in [np.asarray([hash(key)]), *_flatten(obj[key])]]
    return [np.asarray(obj)]


def test_same_seed_gives_identical_files(small: Path, small_again: Path) -> None:
    first, second = _tree_hashes(small), _tree_hashes(small_again)
    assert len(first) > 20
    assert first.keys() == second.keys()
    # videos, wavs, jpgs, csvs: byte-identical
    assert {k: v for k, v in first.items() if not k.endswith((".bin", ".mat"))} == \
        {k: v for k, v in second.items() if not k.endswith((".bin", ".mat"))}
    # .mat: identical after the 128-byte header (which holds scipy's creation time)
    for name in (k for k in first if k.endswith(".mat")):
        assert (small / name).read_bytes()[128:] == (small_again / name).read_bytes()[128:], name
    # torch files: identical content (see the next test for their bytes)
    for name in (k for k in first if k.endswith(".bin")):
        a = _flatten(torch.load(small / name, weights_only=False))
        b = _flatten(torch.load(small_again / name, weights_only=False))
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), name


@pytest.mark.slow  # spawning worker processes costs ~10 s each on a busy machine
def test_output_does_not_depend_on_workers(small: Path, tmp_path: Path) -> None:
    parallel = synth.synthesize(tmp_path / "parallel", seed=0, progress=False, workers=2, **SMALL)
    assert _tree_hashes(small) == _tree_hashes(parallel)


def test_torch_and_mat_files_are_byte_identical(small: Path, small_again: Path) -> None:
    first, second = _tree_hashes(small), _tree_hashes(small_again)
    assert {k: v for k, v in first.items() if k.endswith((".bin", ".mat"))} == \
        {k: v for k, v in second.items() if k.endswith((".bin", ".mat"))}


def test_other_seed_gives_other_data(small: Path) -> None:
    a = synth.plan_clips(0, 6, 3, (4.0, 8.0))
    b = synth.plan_clips(1, 6, 3, (4.0, 8.0))
    assert [p.uuid for p in a] != [p.uuid for p in b]
    ida, idb = synth.make_identity(0, seed=0), synth.make_identity(0, seed=1)
    assert np.abs(ida.reference() - idb.reference()).mean() > 0.02


def test_layout_read_back_directly(small: Path) -> None:
    rows = _all_rows(small)
    assert len(rows) == SMALL["n_pairs"]
    assert list(rows[0]) == ["video_id", "uuid", "speaker_id", "listener_id", "attitude"]
    assert {r["attitude"] for r in rows} <= {"positive", "neutral", "negative"}
    assert all(len(_rows(small, s)) >= 1 for s in ("train", "val", "test"))
    people = {r["speaker_id"] for r in rows} | {r["listener_id"] for r in rows}
    for person in people:
        with Image.open(small / "ref_images" / f"{person}.jpg") as image:
            assert image.size == (256, 256)
    for row in rows:
        uuid = row["uuid"]
        assert row["speaker_id"] != row["listener_id"]
        sr, audio = wavfile.read(small / "audios" / f"{uuid}.wav")
        assert sr == 44100 and audio.ndim == 1
        for role in ("speaker", "listener"):
            stem = f"{uuid}.{role}"
            mat = scipy.io.loadmat(small / "recons" / f"{stem}.mat")
            n = mat["coeff"].shape[0]
            assert mat["coeff"].shape == (n, 257) and mat["coeff"].dtype == np.float32
            assert mat["transform_params"].shape == (n, 5)
            assert np.all(mat["transform_params"][:, :2] == 256)
            feats = torch.load(small / "video_feats" / f"{stem}.bin", weights_only=False)
            assert feats["angle.exp.trans"].shape == (n, 73)
            assert feats["id.gamma.tex"].shape == (n, 187)
            np.testing.assert_array_equal(feats["angle.exp.trans"], _driver_order(mat))
            coeff = mat["coeff"]
            np.testing.assert_array_equal(
                feats["id.gamma.tex"], np.concatenate([coeff[:, :80], coeff[:, 227:254], coeff[:, 144:224]], 1))
            info = probe(small / "videos" / f"{stem}.mp4")
            assert (info.n_frames, info.fps, info.width, info.height) == (n, 30.0, 256, 256)
            assert not info.has_audio
            assert abs(len(audio) - n / 30 * sr) < sr / 30
            with Image.open(small / "first_frames" / f"{stem}.jpg") as image:
                assert image.size == (256, 256)


def test_mean_std_files_match_the_train_split(small: Path) -> None:
    train = _rows(small, "train")
    dynamic = np.concatenate([
        torch.load(small / "video_feats" / f"{r['uuid']}.{role}.bin", weights_only=False)["angle.exp.trans"]
        for r in train for role in ("speaker", "listener")
    ]).astype(np.float64)
    stats = torch.load(small / "video_feats_mean_std.bin", weights_only=False)
    np.testing.assert_allclose(stats["angle.exp.trans"]["mean"].numpy(), dynamic.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["angle.exp.trans"]["std"].numpy(), dynamic.std(0, ddof=1), rtol=1e-4, atol=1e-6)
    assert stats["id.gamma.tex"]["mean"].shape == (187,)
    audio = torch.load(small / "audio_feats_mean_std.bin", weights_only=False)
    assert set(audio) == {"mean", "std"}  # the official file is flat
    assert audio["mean"].shape == (45,)


def _identity_of(root: Path, person_id: str) -> synth.Identity:
    return synth.make_identity(int(person_id[1:]), seed=0)


def test_rig_plus_compositing_reproduces_the_stored_videos(small: Path) -> None:
    rig = synth.gt_rig()
    row = _all_rows(small)[0]
    scores = {}
    for role, person in (("speaker", row["speaker_id"]), ("listener", row["listener_id"])):
        stem = f"{row['uuid']}.{role}"
        coeffs = _driver_order(scipy.io.loadmat(small / "recons" / f"{stem}.mat"))
        identity = _identity_of(small, person)
        rendered = torch.cat(list(synth.composite_frames(rig, identity, coeffs))).numpy()
        decoded = torch.cat(list(read_frames(small / "videos" / f"{stem}.mp4"))).numpy()
        assert rendered.shape == decoded.shape
        scores[role] = _psnr(rendered, decoded)
        assert scores[role] >= 35.0
        # the test can fail: coefficients one second later (or another identity) do not match
        shifted = np.roll(coeffs, 15, axis=0)
        wrong = torch.cat(list(synth.composite_frames(rig, identity, shifted))).numpy()
        assert _psnr(wrong, decoded) < scores[role] - 3


def test_mouth_follows_the_audio_envelope_with_a_lag(small: Path) -> None:
    for row in _all_rows(small):
        sr, pcm = wavfile.read(small / "audios" / f"{row['uuid']}.wav")
        coeffs = _driver_order(scipy.io.loadmat(small / "recons" / f"{row['uuid']}.speaker.mat"))
        n = coeffs.shape[0]
        chunk = sr // 30
        audio = np.zeros(n * chunk)
        audio[: min(len(pcm), n * chunk)] = pcm[: n * chunk] / 32768.0
        rms = np.sqrt((audio.reshape(n, chunk) ** 2).mean(1))
        jaw = coeffs[:, 3]  # exp component 0 = jaw opening
        corr = {lag: np.corrcoef(rms[: n - lag], jaw[lag:])[0, 1] for lag in range(6)}
        assert max(corr, key=lambda lag: corr[lag]) == synth.MOUTH_LAG
        assert corr[synth.MOUTH_LAG] > 0.7


def test_vowels_have_their_mouth_shapes() -> None:
    """Every vowel moves the non-designed exp components along its own viseme (audio-predictable)."""
    identity = synth.make_identity(2)
    rng = np.random.default_rng(5)
    samples, syllables, _ = synth.synthesize_speech(rng, identity, 6.0)
    coeffs = synth.speaker_motion(rng, identity, samples, syllables, 180)
    table = synth.visemes()[:, synth.PUCKER + 1 :]
    exp = coeffs[:, 3 + synth.PUCKER + 1 : 67] - identity.neutral[3 + synth.PUCKER + 1 : 67]
    hits = total = 0
    for syl in syllables:
        frame = round((syl.start + syl.end) / 2 * 30) + synth.MOUTH_LAG
        if frame >= 180 or synth.audio_envelope(samples, 180)[frame - synth.MOUTH_LAG] < 0.3:
            continue
        # cosine similarity to each vowel's shape: the spoken vowel's is the highest
        v = exp[frame]
        sims = table @ v / (np.linalg.norm(table, axis=1) * np.linalg.norm(v))
        hits += int(np.argmax(sims) == syl.vowel)
        total += 1
    assert total >= 8 and hits >= 0.8 * total


def test_people_differ_more_than_a_clip_varies() -> None:
    """As in real ViCo: per-person rest offsets dominate, so frame 0 is an informative reference."""
    plans = synth.plan_clips(0, 8, 8, (4.0, 4.0))
    identities = [synth.make_identity(i) for i in range(8)]
    means, within = [], []
    for plan in plans:
        speaker = synth.clip_coefficients(plan, identities, 0)[1]
        means.append(speaker.mean(0))
        within.append(speaker.var(0))
    between = np.var(np.stack(means), axis=0)  # (73,)
    mean_within = np.mean(np.stack(within), axis=0)
    for name, sl in (("angle", slice(0, 3)), ("exp", slice(3 + synth.PUCKER + 1, 67)), ("pose+exp", slice(0, 70))):
        assert between[sl].sum() > mean_within[sl].sum(), name
    # neutral offsets move no pixel: the identity's reference is its rest pose
    assert np.abs(identities[0].neutral[3:67]).max() > 0.1


def test_listener_reaction_follows_attitude() -> None:
    identity = synth.make_identity(0)
    phrases = [(0.5, 1.5), (2.5, 3.5), (4.5, 5.5)]
    means = {}
    for attitude in ("positive", "neutral", "negative"):
        coeffs = synth.listener_motion(np.random.default_rng(3), identity, phrases, attitude, 210)
        means[attitude] = (coeffs[:, 3 + synth.SMILE].mean(), coeffs[:, 3 + synth.FROWN].mean())
        # nods: pitch moves after each phrase end
        pitch = coeffs[:, 0] - identity.neutral[0]
        after = slice(int(1.5 * 30), int(2.4 * 30))
        assert np.ptp(pitch[after]) > 0.05
    assert means["positive"][0] > means["neutral"][0] + 0.3
    assert means["negative"][1] > means["neutral"][1] + 0.3
    assert means["negative"][0] < means["positive"][0]


def test_speech_has_phrases_and_pauses() -> None:
    identity = synth.make_identity(1)
    samples, syllables, phrases = synth.synthesize_speech(np.random.default_rng(0), identity, 6.0)
    assert len(samples) == 6 * 44100 and np.abs(samples).max() <= 1.0
    assert len(phrases) >= 2 and len(syllables) >= 8
    envelope = synth.audio_envelope(samples, 180)
    gap = phrases[0][1], phrases[1][0]
    pause = envelope[int(gap[0] * 30) + 2 : int(gap[1] * 30) - 1]
    assert pause.max() < 0.1 < np.median(envelope[int(phrases[0][0] * 30) : int(phrases[0][1] * 30)])


def test_identities_are_distinct_faces() -> None:
    refs = [synth.make_identity(i).reference() for i in range(synth.N_IDENTITIES)]
    for i in range(len(refs)):
        for j in range(i + 1, len(refs)):
            assert np.abs(refs[i] - refs[j]).mean() > 0.04, (i, j)


def test_ensure_vico_mini_generates_once_atomically(bench_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = synth.synthesize

    def small_synthesize(out: Path, *, seed: int = 0, progress: bool = True) -> Path:
        calls.append(out)
        return real(out, seed=seed, progress=False, n_pairs=3, seconds=(0.5, 0.5), n_identities=2,
                    workers=1)

    monkeypatch.setattr(synth, "synthesize", small_synthesize)
    path = synth.ensure_vico_mini(progress=False)
    assert path == bench_home / "datasets" / f"vico-mini-v{synth.GENERATOR_VERSION}"
    assert (path / synth.COMPLETE_MARKER).is_file() and (path / "train.csv").is_file()
    assert synth.ensure_vico_mini(progress=False) == path
    assert len(calls) == 1
    assert calls[0] != path  # generated elsewhere, then renamed into place
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_ensure_vico_mini_leaves_nothing_after_a_crash(bench_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(out: Path, **_: object) -> Path:
        (out / "train.csv").write_text("half")
        raise RuntimeError("killed")

    monkeypatch.setattr(synth, "synthesize", crash)
    with pytest.raises(RuntimeError):
        synth.ensure_vico_mini(progress=False)
    assert list((bench_home / "datasets").iterdir()) == []


@pytest.mark.slow
def test_full_size_generation(tmp_path: Path) -> None:
    start = time.perf_counter()
    root = synth.synthesize(tmp_path / "vico-mini", seed=0, progress=False)
    elapsed = time.perf_counter() - start
    rows = _all_rows(root)
    assert len(rows) == synth.N_PAIRS >= 24
    assert len({r["speaker_id"] for r in rows} | {r["listener_id"] for r in rows}) >= 6
    assert [len(_rows(root, s)) for s in ("train", "val", "test")] == [16, 4, 4]
    for row in rows:
        n = probe(root / "videos" / f"{row['uuid']}.speaker.mp4").n_frames
        assert 4 * 30 <= n <= 8 * 30
    print(f"vico-mini generated in {elapsed:.1f} s")


def test_the_vico_reader_reads_it(small: Path, bench_home: Path) -> None:
    """The data layer's reader, validator and statistics agree with the generated files."""
    from bench.data.check import check_dataset
    from bench.data.stats import compute_stats
    from bench.data.vico import ViCoDataset

    report = check_dataset(small)
    assert report.ok, [str(p) for p in report.problems]
    dataset = ViCoDataset(small)
    listening = dataset.samples("test", "listening")
    assert len(listening) == 1
    sample = listening[0]
    mat = scipy.io.loadmat(small / "recons" / f"{sample.uuid}.listener.mat")
    gt = sample.gt_coeffs()
    assert gt is not None
    np.testing.assert_array_equal(gt.numpy(), _driver_order(mat))
    assert sample.attitude in ("positive", "neutral", "negative")
    assert sample.audio_features().shape == (sample.n_frames, 45)
    stats = compute_stats(small, "train")
    files = torch.load(small / "video_feats_mean_std.bin", weights_only=False)
    np.testing.assert_allclose(stats.video["angle.exp.trans"]["mean"], files["angle.exp.trans"]["mean"].numpy(),
                               rtol=1e-5, atol=1e-6)
    audio = torch.load(small / "audio_feats_mean_std.bin", weights_only=False)
    np.testing.assert_allclose(stats.audio["mean"], audio["mean"].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.audio["std"], audio["std"].numpy(), rtol=1e-3, atol=1e-4)
