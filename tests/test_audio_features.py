"""Official ViCo audio features: golden parity, sample rates, stereo, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.errors import InputError
from bench.features import audio
from bench.features.audio import audio_features, cached_audio_features, feature_dim


def test_golden_features_match(golden: Path) -> None:
    expected = np.load(golden / "audio" / "speech_44k.feats.npy")
    got = audio_features(golden / "audio" / "speech_44k.wav", expected.shape[0])
    assert got.shape == expected.shape == (179, 45)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-3
    # the quirks that matter: deltas of one frame are zero, RMS/ZCR to float precision
    assert np.abs(got[:, 39:] - expected[:, 39:]).max() <= 1e-6


def _tone(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size))


def _reference_rms_zcr(chunk: np.ndarray, sr: int) -> np.ndarray:
    """Independent numpy version of the official RMS (2048/512, centred, zero padding) and
    ZCR (window = sr samples, edge padding, hop 512)."""
    k = 1 + len(chunk) // 512
    padded = np.pad(chunk, 1024)
    rms = [np.sqrt(np.mean(padded[i * 512 : i * 512 + 2048] ** 2)) for i in range(k)]
    edge = np.pad(chunk, sr // 2, mode="edge")
    signs = np.signbit(np.where(np.abs(edge) <= 1e-10, 0.0, edge))
    zcr = []
    for i in range(k):
        window = signs[i * 512 : i * 512 + sr]
        crossings = np.concatenate([[False], window[1:] != window[:-1]])
        zcr.append(crossings.mean())
    return np.array(rms + zcr)


@pytest.mark.parametrize(("sr", "dim"), [(44100, 45), (16000, 43), (48000, 47), (22050, 43), (8000, 41)])
def test_dimension_and_rms_zcr_at_any_rate(sr: int, dim: int) -> None:
    assert feature_dim(sr) == dim
    samples = _tone(sr, 0.5)
    feats = audio_features((samples, sr), 10)
    assert feats.shape == (10, dim)
    assert np.all(feats[:, 13:39] == 0)
    chunk = int(sr / 30)
    for i in (0, 7):
        want = _reference_rms_zcr(samples[i * chunk : (i + 1) * chunk], sr)
        np.testing.assert_allclose(feats[i, 39:], want, atol=1e-6)


def test_stereo_is_channel_mean_and_padding(tmp_path: Path) -> None:
    sr = 16000
    left, right = _tone(sr, 0.3, seed=1), _tone(sr, 0.3, seed=2)
    stereo = np.stack([left, right], axis=1)
    mono = audio_features(((left + right) / 2, sr), 12)
    np.testing.assert_allclose(audio_features((stereo, sr), 12), mono, atol=1e-5)
    # a stereo wav on disk reads the same (16-bit PCM quantisation aside)
    sf.write(tmp_path / "s.wav", stereo, sr, subtype="FLOAT")
    np.testing.assert_allclose(audio_features(tmp_path / "s.wav", 12), mono, atol=1e-4)
    # 0.3 s = 9 frames; asking for 12 zero-pads: silent chunks have log energy log(1)=0
    # (energy floor 1.0), zero cepstra and zero RMS
    assert np.abs(mono[10:, :13]).max() < 1e-4 and np.all(mono[10:, 39:41] == 0)
    # truncation: the first frames do not depend on how much audio follows
    np.testing.assert_allclose(audio_features((left, sr), 5), audio_features((left, sr), 9)[:5])


def test_cache_second_call_reads_disk(tmp_path: Path, bench_home: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, _tone(16000, 0.4), 16000)
    first = cached_audio_features(wav, 11)
    entries = list((bench_home / "cache" / "audio_features").glob("*.npy"))
    assert len(entries) == 1

    def boom(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(audio, "audio_features", boom)
    np.testing.assert_array_equal(cached_audio_features(wav, 11), first)
    with pytest.raises(AssertionError):  # another n_frames is another key
        cached_audio_features(wav, 12)
    # same bytes under another name hit the same entry (content-keyed, not name-keyed)
    other = tmp_path / "renamed.wav"
    other.write_bytes(wav.read_bytes())
    np.testing.assert_array_equal(cached_audio_features(other, 11), first)


def test_bad_wav_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        audio_features(tmp_path / "missing.wav", 3)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00")
    with pytest.raises(InputError, match="bad.wav"):
        audio_features(bad, 3)


@pytest.mark.benchmark
def test_benchmark_audio_features(benchmark, golden: Path) -> None:  # type: ignore[no-untyped-def]
    """Throughput of the official features: 179 frames (6 s of 44.1 kHz speech) per round."""
    wav = golden / "audio" / "speech_44k.wav"
    feats = benchmark(audio_features, wav, 179)
    assert feats.shape == (179, 45)
