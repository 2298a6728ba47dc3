"""The official ViCo audio features (SPEC section 3), one row per video frame.

Layout per frame (45 values at 44.1 kHz, 43 at 16 kHz)::

    MFCC 13 | delta 13 | delta-delta 13 | RMS k | ZCR k      with k = 1 + chunk // 512

The official preprocessing script is reproduced, quirks included, because the released
drivers were trained on exactly these numbers:

* **One MFCC frame per video frame.** The wav is cut into chunks of ``int(sr / 30)``
  samples (the last chunk zero-padded / the wav truncated to ``n_frames`` chunks) and
  Kaldi MFCC runs on each chunk alone; with 25 ms windows, 10 ms shift and snip-edges
  a 33 ms chunk yields exactly one frame, so later 10 ms of each chunk are ignored.
* **Deltas of a single frame.** Kaldi-style deltas (window 5, replicate padding) of a
  one-frame sequence are zero; the official file holds them anyway (values ~1e-6 from
  float rounding), so we emit exact zeros in those 26 slots.
* **Kaldi options are torchaudio's defaults, not Kaldi's:** ``energy_floor=1.0`` (Kaldi
  uses 0), ``dither=0``, C0 replaced by the raw log energy, and samples in ``[-1, 1]``
  (soundfile floats, not 16-bit integers): a silent chunk therefore has log energy
  ``log(1.0) = 0``.
* **RMS:** librosa ``rms`` with its defaults: frame 2048, hop 512, centred with zero
  padding (``pad_mode="constant"``, librosa >= 0.10; the golden features were made that
  way: reflect padding differs by up to 0.08). Passed explicitly so a librosa default
  change cannot move the numbers.
* **ZCR with ``frame_length = sr``:** the official call passed ``sr`` positionally, which
  librosa takes as ``frame_length``; every ZCR window therefore spans one second of
  (edge-padded) signal around a 33 ms chunk, hop 512.

The MFCC comes from kaldi-native-fbank (torchaudio does not load against the torch builds
here); it matches torchaudio's ``compliance.kaldi.mfcc`` to ~3e-4.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError

#: bump when the numbers this module produces change: it keys the on-disk cache
FEATURE_VERSION = "vico-audio-1"
FPS = 30
HOP = 512


def feature_dim(sr: int) -> int:
    """Number of features per frame at sample rate ``sr`` (45 at 44.1 kHz, 43 at 16 kHz)."""
    k = 1 + (int(sr / FPS)) // HOP
    return 39 + 2 * k


def load_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float64 samples in [-1, 1] (mean of channels) and the sample rate."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "wav file not found", fix="check the dataset's audios/ folder")
    try:
        audio, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError for bad files
        raise InputError(path, f"unreadable or truncated wav ({exc})",
                         fix="re-extract the audio (any PCM wav works)") from exc
    if audio.shape[0] == 0:
        raise InputError(path, "wav has no samples", fix="re-extract the audio")
    return audio.mean(axis=1), int(sr)


def _mfcc_options(sr: int):
    import kaldi_native_fbank as knf

    opts = knf.MfccOptions()
    opts.frame_opts.samp_freq = float(sr)
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.mel_opts.num_bins = 23
    opts.num_ceps = 13
    opts.use_energy = True
    opts.energy_floor = 1.0  # torchaudio's default, which the official script used
    opts.raw_energy = True
    opts.cepstral_lifter = 22.0
    return opts


def _chunk_mfcc(chunk: np.ndarray, sr: int, opts) -> np.ndarray:
    import kaldi_native_fbank as knf

    mfcc = knf.OnlineMfcc(opts)
    mfcc.accept_waveform(float(sr), chunk.astype(np.float32))
    mfcc.input_finished()
    if mfcc.num_frames_ready < 1:
        raise ValueError(f"chunk of {len(chunk)} samples is shorter than one 25 ms MFCC window")
    return np.asarray(mfcc.get_frame(0), dtype=np.float64)


def audio_features(source: str | Path | tuple[np.ndarray, int], n_frames: int) -> np.ndarray:
    """The official ViCo audio features.

    Args:
        source: a wav path, or ``(samples, sr)`` with samples ``(N,)`` or ``(N, C)`` in
            [-1, 1] (channels are averaged).
        n_frames: number of video frames (30 fps) to produce features for.

    Returns:
        ``(n_frames, F)`` float32, F = :func:`feature_dim` (sr) (45 at 44.1 kHz).
    """
    import librosa

    if isinstance(source, (str, Path)):
        audio, sr = load_wav(source)
    else:
        samples, sr = source
        audio = np.asarray(samples, dtype=np.float64)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if audio.ndim != 1:
            raise ValueError(f"samples must be (N,) or (N,C), got {np.shape(samples)}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    chunk = int(sr / FPS)
    target = chunk * n_frames
    audio = audio[:target] if len(audio) >= target else np.pad(audio, (0, target - len(audio)))
    opts = _mfcc_options(sr)
    chunks = audio.reshape(n_frames, chunk)
    out = np.zeros((n_frames, feature_dim(sr)), dtype=np.float64)
    for i in range(n_frames):
        out[i, :13] = _chunk_mfcc(chunks[i], sr, opts)
    # out[:, 13:39] stay 0: deltas of a one-frame sequence (see module docstring)
    # librosa treats leading axes as channels, so all chunks go through in one call each;
    # every chunk is still padded and framed on its own, as in the per-chunk official loop
    rms = librosa.feature.rms(y=chunks, frame_length=2048, hop_length=HOP, center=True,
                              pad_mode="constant")
    zcr = librosa.feature.zero_crossing_rate(y=chunks, frame_length=sr, hop_length=HOP,
                                             center=True)
    k = (out.shape[1] - 39) // 2
    out[:, 39 : 39 + k] = rms.reshape(n_frames, k)
    out[:, 39 + k :] = zcr.reshape(n_frames, k)
    return out.astype(np.float32)


def cached_audio_features(wav_path: str | Path, n_frames: int) -> np.ndarray:
    """:func:`audio_features` of a wav file, cached on disk.

    The cache key is the SHA-256 of the wav bytes, :data:`FEATURE_VERSION` and
    ``n_frames``; entries live in ``bench.paths.cache_dir("audio_features")``.
    """
    from ..paths import cache_dir, file_sha256

    wav_path = Path(wav_path)
    if not wav_path.is_file():
        raise InputError(wav_path, "wav file not found", fix="check the dataset's audios/ folder")
    key = hashlib.sha256(
        f"{file_sha256(wav_path)}|{FEATURE_VERSION}|{n_frames}".encode()
    ).hexdigest()
    folder = cache_dir("audio_features")
    target = folder / f"{key}.npy"
    if target.is_file():
        try:
            cached = np.load(target)
            if cached.ndim == 2 and cached.shape[0] == n_frames:
                return cached.astype(np.float32, copy=False)
        except (OSError, ValueError):
            pass  # a corrupt entry is recomputed and overwritten
    feats = audio_features(wav_path, n_frames)
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".npy", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, feats)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return feats
