"""`vico-mini`: a small, deterministic conversational-head dataset in the ViCo challenge layout.

A fresh machine with no dataset and no network still has something real to evaluate
on: this generator writes speaker/listener videos, speech-like audio and 3DMM-style
coefficients that the ``vico`` reader reads like the real dataset (SPEC sections 1-2).

* **Faces** are real photographs that ship inside an installed package
  (scikit-image's ``astronaut``), turned into distinct identities by crop, colour,
  mirroring and a procedural background behind a hand-drawn person matte.
* **Audio** is made here: voiced syllables (a glottal pulse train through formant
  resonators, per-speaker pitch, formant scale and rate) with consonant bursts,
  grouped into phrases separated by pauses.
* **Motion** follows the audio: the jaw opens with the speech envelope two frames
  (67 ms) later and every vowel has its mouth shape across the expression components
  (visemes), the head moves smoothly and nods on stressed syllables, eyes blink;
  the listener nods and reacts after the speaker's phrases, smiling (positive),
  frowning (negative) or barely (neutral). Motion is around each person's resting
  expression and head pose, so (as in real ViCo) coefficients differ more between
  people than within a clip and the first frame is an informative reference.
* **Video** is the ``rig`` renderer applied to the identity's neutral image, with the
  moving head composited over the static background (:func:`composite_frames`); so
  rendering a clip's stored coefficients with the rig plus that compositing
  reproduces its video to codec precision.

Output is bit-identical for the same :data:`GENERATOR_VERSION` and seed: every
random draw comes from a numpy ``Generator`` seeded by (version, seed, clip), x264
runs single-threaded, and wav/jpg/mat writers are deterministic.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import coeffs as C
from ..paths import bench_home

if TYPE_CHECKING:
    import torch
    from bench_plugins.renderers.rig import RigRenderer

#: bump whenever the output changes: it names the cache folder.
#: 2: resting expression/pose per person, visemes, half the idle expression noise
GENERATOR_VERSION = 2
FPS = 30
SIZE = 256
SAMPLE_RATE = 44100
N_IDENTITIES = 8
N_PAIRS = 24
SECONDS = (4.0, 8.0)
COMPLETE_MARKER = ".complete"
ROLES = ("speaker", "listener")
ATTITUDE_CYCLE = ("positive", "neutral", "negative")

# The astronaut photograph (512x512): face centre (nose), face radius, and a person
# matte made of ellipses and a torso polygon, in its pixel coordinates.
_PHOTO_FACE_CENTRE = (222.0, 122.0)
_PHOTO_FACE_RADIUS = 65.0
_PHOTO_ELLIPSES = (  # (cx, cy, rx, ry)
    (226.0, 80.0, 73.0, 60.0),  # hair
    (222.0, 126.0, 45.0, 62.0),  # face
    (222.0, 190.0, 40.0, 40.0),  # neck
)
_PHOTO_TORSO = (
    (165.0, 160.0), (255.0, 160.0), (267.0, 171.0), (287.0, 187.0), (300.0, 213.0), (304.0, 242.0),
    (340.0, 262.0), (365.0, 330.0), (372.0, 512.0), (14.0, 512.0), (24.0, 310.0),
    (60.0, 275.0), (110.0, 240.0), (116.0, 195.0), (135.0, 172.0),
)

# Vowel formants (F1, F2, F3) in Hz and lip rounding (drives the pucker component).
_VOWELS: tuple[tuple[float, float, float, float], ...] = (
    (730.0, 1090.0, 2440.0, 0.0),  # a
    (530.0, 1840.0, 2480.0, 0.0),  # e
    (270.0, 2290.0, 3010.0, 0.0),  # i
    (570.0, 840.0, 2410.0, 1.0),  # o
    (300.0, 870.0, 2240.0, 1.0),  # u
)

# exp components the rig designs (see bench_plugins.renderers.rig)
JAW, SMILE, BROW, BLINK, FROWN, PUCKER = range(6)

# Each person's resting state, as a 3DMM fit of a real reference photo has one: a
# resting expression (real exp coefficients carry a per-person offset) and a head
# pose and position relative to the camera. As in real ViCo, coefficients then vary
# more between people than within a clip, so the first frame is an informative
# reference. The offsets are part of the neutral image's coefficients, so they move
# no pixel (the rig renders coefficient differences).
REST_EXP_STD = 0.12
REST_ANGLE_STD = (0.08, 0.15, 0.04)  # pitch, yaw, roll (rad)
REST_TRANS_STD = (0.04, 0.03, 0.10)

# Mouth shapes: each vowel moves every expression component a little (visemes), as
# articulation does in a real 3DMM, not only the jaw and lip-rounding components the
# rig designs. A fixed table (one "language" per generator version), so the speaker's
# expression follows the audio's formants.
VISEME_STD = 0.15
IDLE_EXP_STD = 0.03


# ---------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class Identity:
    """One synthetic person.

    Attributes:
        person_id: name used in the split CSVs and ``ref_images/``.
        person: (H,W,3) float32 in [0,1], the recoloured photograph.
        matte: (H,W) float32 in [0,1], 1 on the person.
        background: (H,W,3) float32 in [0,1], the static backdrop.
        neutral: (73,) float32 driver-order coefficients of the neutral image.
        fixed: (187,) float32 id | gamma | tex, constant for the person.
        f0: voice pitch in Hz; formant_scale: vocal-tract scaling; rate: syllables/s.
    """

    person_id: str
    person: np.ndarray
    matte: np.ndarray
    background: np.ndarray
    neutral: np.ndarray
    fixed: np.ndarray
    f0: float
    formant_scale: float
    rate: float

    def reference(self) -> np.ndarray:
        """(H,W,3) float32: the person over the background, neutral pose."""
        m = self.matte[..., None]
        return (m * self.person + (1 - m) * self.background).astype(np.float32)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([GENERATOR_VERSION, seed, *key])


@functools.lru_cache(maxsize=1)
def _load_photo() -> np.ndarray:
    """scikit-image's astronaut (512,512,3) uint8, read from the installed package."""
    from importlib.resources import files

    from PIL import Image

    with (files("skimage") / "data" / "astronaut.png").open("rb") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def _photo_matte(height: int, width: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    for cx, cy, rx, ry in _PHOTO_ELLIPSES:
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    draw.polygon(list(_PHOTO_TORSO), fill=255)
    return np.asarray(image, dtype=np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """(size,size,channels) smooth noise in about [-1,1]: a coarse grid upsampled bicubically."""
    from PIL import Image

    coarse = rng.normal(size=(cells, cells, channels)).astype(np.float32)
    out = np.stack([
        np.asarray(Image.fromarray(coarse[..., c], mode="F").resize((size, size), Image.Resampling.BICUBIC))
        for c in range(channels)
    ], axis=-1)
    return out / 2.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A studio-like backdrop: two-colour gradient, soft blotches, a vignette."""
    top, bottom = rng.uniform(0.15, 0.85, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) - 0.5
    t = np.clip(0.5 + xx * math.cos(angle) + yy * math.sin(angle), 0, 1)[..., None]
    image = (1 - t) * top + t * bottom
    image += 0.10 * _smooth_noise(rng, size, 6, 3)
    image += 0.04 * _smooth_noise(rng, size, 24, 1)
    image *= (1 - 0.35 * (xx**2 + yy**2))[..., None]
    return np.clip(image, 0, 1).astype(np.float32)


def _recolour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hue rotation, saturation, brightness and per-channel gain in YIQ space."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                      dtype=np.float32)
    hue = rng.uniform(-0.45, 0.45)
    saturation = rng.uniform(0.65, 1.25)
    brightness = rng.uniform(0.7, 1.1)
    rot = np.array([[1, 0, 0], [0, math.cos(hue), -math.sin(hue)], [0, math.sin(hue), math.cos(hue)]],
                   dtype=np.float32)
    scale = np.diag([brightness, saturation, saturation]).astype(np.float32)
    transform = np.linalg.inv(to_yiq) @ scale @ rot @ to_yiq
    out = image @ transform.T.astype(np.float32)
    out *= rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    gamma = rng.uniform(0.85, 1.15)
    return np.clip(np.clip(out, 0, 1) ** gamma, 0, 1).astype(np.float32)


def make_identity(index: int, seed: int = 0, size: int = SIZE) -> Identity:
    """The ``index``-th identity of a dataset: deterministic in (version, seed, index)."""
    from bench_plugins.renderers.rig import FACE_RADIUS_PX
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    rng = _rng(seed, 1, index)
    photo = _load_photo()
    full = photo.shape[0]
    # crop: a square around the head; bigger crops make smaller faces
    side = rng.uniform(270.0, 340.0)
    cx = _PHOTO_FACE_CENTRE[0] + rng.uniform(-22.0, 22.0)
    cy = _PHOTO_FACE_CENTRE[1] + side * rng.uniform(0.08, 0.16)
    x0 = float(np.clip(cx - side / 2, 0, full - side))
    y0 = float(np.clip(cy - side / 2, 0, full - side))
    box = (x0, y0, x0 + side, y0 + side)
    person = np.asarray(Image.fromarray(photo).resize((size, size), Image.Resampling.BICUBIC, box=box),
                        dtype=np.float32) / 255.0
    matte_full = Image.fromarray(_photo_matte(full, full), mode="F")
    matte = np.asarray(matte_full.resize((size, size), Image.Resampling.BILINEAR, box=box), dtype=np.float32)
    matte = np.clip(gaussian_filter(matte, sigma=1.2 * size / 256), 0, 1).astype(np.float32)
    zoom = size / side
    face_x = (_PHOTO_FACE_CENTRE[0] - x0) * zoom - 0.5  # pixel-centre coordinates
    face_y = (_PHOTO_FACE_CENTRE[1] - y0) * zoom - 0.5
    face_r = _PHOTO_FACE_RADIUS * zoom
    if index % 2 == 1:  # mirror every other identity
        person, matte = person[:, ::-1], matte[:, ::-1]
        face_x = size - 1 - face_x
    person = _recolour(np.ascontiguousarray(person), rng)
    background = _background(rng, size)
    neutral = np.zeros(C.N_COEFFS, dtype=np.float32)
    neutral[C.CROP] = (FACE_RADIUS_PX * size / 256 / face_r, face_x, size - 1 - face_y)
    fixed = rng.normal(0, 1, size=187).astype(np.float32)
    rest = _rng(seed, 3, index)  # its own stream: the appearance draws above are unchanged
    neutral[C.EXP] = rest.normal(0.0, REST_EXP_STD, size=C.EXP.stop - C.EXP.start)
    neutral[C.ANGLE] = rest.normal(0.0, REST_ANGLE_STD)
    neutral[C.TRANS] = rest.normal(0.0, REST_TRANS_STD)
    return Identity(
        person_id=f"p{index:03d}",
        person=person,
        matte=np.ascontiguousarray(matte),
        background=background,
        neutral=neutral,
        fixed=fixed,
        f0=float(rng.uniform(95.0, 230.0)),
        formant_scale=float(rng.uniform(0.9, 1.15)),
        rate=float(rng.uniform(3.6, 5.2)),
    )


# --------------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class Syllable:
    start: float  # seconds
    end: float
    vowel: int
    stress: float  # 0..1


def _resonator(signal: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    from scipy.signal import lfilter

    r = math.exp(-math.pi * bandwidth / sr)
    theta = 2 * math.pi * freq / sr
    a = [1.0, -2 * r * math.cos(theta), r * r]
    gain = 1 - r  # keeps the resonators' peaks comparable
    return np.asarray(lfilter([gain], a, signal))


def synthesize_speech(rng: np.random.Generator, identity: Identity, seconds: float,
                      sr: int = SAMPLE_RATE) -> tuple[np.ndarray, list[Syllable], list[tuple[float, float]]]:
    """Speech-like audio: phrases of voiced syllables with formants, separated by pauses.

    Returns:
        samples (N,) float32 in [-1,1], the syllables, and the phrases as (start, end) s.
    """
    from scipy.signal import lfilter

    n = round(seconds * sr)
    out = np.zeros(n, dtype=np.float64)
    syllables: list[Syllable] = []
    phrases: list[tuple[float, float]] = []
    t = rng.uniform(0.15, 0.5)
    while t < seconds - 0.5:
        n_syll = int(rng.integers(3, 10))
        phrase_start = t
        for i in range(n_syll):
            duration = rng.uniform(0.6, 1.4) / identity.rate
            if t + duration > seconds - 0.2:
                break
            stress = float(rng.random() ** 2)
            syllables.append(Syllable(t, t + duration, int(rng.integers(len(_VOWELS))), stress))
            t += duration + (rng.uniform(0.0, 0.05) if i < n_syll - 1 else 0.0)
        if syllables and syllables[-1].start >= phrase_start:
            phrases.append((phrase_start, syllables[-1].end))
        t += rng.uniform(0.35, 0.9)

    for k, syl in enumerate(syllables):
        a, b = int(syl.start * sr), min(int(syl.end * sr), n)
        length = b - a
        if length <= 16:
            continue
        local = np.arange(length) / sr
        # pitch: speaker's f0, raised on stress, falling over the syllable, a little jitter
        f0 = identity.f0 * (1 + 0.18 * syl.stress) * (1 - 0.08 * local / max(local[-1], 1e-3))
        f0 = f0 * (1 + 0.01 * rng.standard_normal())
        phase = np.cumsum(f0 / sr)
        pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
        source = lfilter([1.0], [1.0, -0.96], pulses)  # glottal spectral tilt
        f1, f2, f3, _ = _VOWELS[syl.vowel]
        scale = identity.formant_scale
        voiced = sum(_resonator(source, f * scale, bw, sr) * g
                     for f, bw, g in ((f1, 90.0, 1.0), (f2, 110.0, 0.6), (f3, 150.0, 0.3)))
        envelope = np.sin(np.pi * np.clip(local / local[-1], 0, 1)) ** 0.6
        voiced = voiced * envelope * (0.6 + 0.4 * syl.stress)
        voiced /= np.max(np.abs(voiced)) + 1e-9
        out[a:b] += voiced * (0.5 + 0.3 * syl.stress)
        if rng.random() < 0.6 and k > 0:  # a fricative/plosive burst before the vowel
            burst_len = int(rng.uniform(0.02, 0.06) * sr)
            start = max(0, a - burst_len // 2)
            noise = rng.standard_normal(burst_len)
            noise = np.diff(noise, prepend=0.0)  # high-pass: hiss
            noise *= np.hanning(burst_len) * rng.uniform(0.05, 0.15)
            out[start : start + burst_len] += noise[: n - start]
    out += 0.002 * rng.standard_normal(n)  # room noise, so silence is not digital zero
    out *= 0.7 / (np.max(np.abs(out)) + 1e-9)
    return out.astype(np.float32), syllables, phrases


def _write_wav(path: Path, samples: np.ndarray, sr: int) -> None:
    from scipy.io import wavfile

    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
    wavfile.write(str(path), sr, pcm)


# -------------------------------------------------------------------------------- motion


def _smooth_series(rng: np.random.Generator, n: int, dims: int, *, cutoff_s: float) -> np.ndarray:
    """(n,dims) smooth zero-mean noise with unit std, low-passed at ~1/cutoff_s Hz."""
    from scipy.ndimage import gaussian_filter1d

    noise = rng.standard_normal((n + 60, dims))
    smooth = gaussian_filter1d(noise, sigma=cutoff_s * FPS / 2.0, axis=0, mode="nearest")[30 : 30 + n]
    return (smooth - smooth.mean(0)) / (smooth.std(0) + 1e-9)


def _bump(n: int, centre: float, width: float) -> np.ndarray:
    """(n,) raised-cosine bump over frames, centred at frame ``centre``, full width ``width``."""
    frames = np.arange(n, dtype=np.float64)
    x = np.clip((frames - centre) / (width / 2), -1, 1)
    return 0.5 * (1 + np.cos(np.pi * x))


def _blinks(rng: np.random.Generator, n: int, mean_gap_s: float) -> np.ndarray:
    out = np.zeros(n)
    t = rng.uniform(0.3, mean_gap_s) * FPS
    while t < n:
        out = np.maximum(out, 1.3 * _bump(n, t, 8))
        t += max(1.2, rng.exponential(mean_gap_s)) * FPS
    return out


def audio_envelope(samples: np.ndarray, n_frames: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(n_frames,) RMS of each video frame's audio chunk, in [0,1] (normalised by the 95th pct)."""
    chunk = int(sr / FPS)
    padded = np.zeros(n_frames * chunk, dtype=np.float64)
    m = min(len(samples), len(padded))
    padded[:m] = samples[:m]
    rms = np.sqrt(np.mean(padded.reshape(n_frames, chunk) ** 2, axis=1))
    return np.clip(rms / (np.percentile(rms, 95) + 1e-9), 0, 1.2)


#: mouth follows the audio envelope this many frames later (67 ms at 30 fps)
MOUTH_LAG = 2


def _base_motion(rng: np.random.Generator, identity: Identity, n: int, energy: float) -> np.ndarray:
    """(n,73) idle motion around the neutral pose: smooth pose drift, small exp noise."""
    out = np.tile(identity.neutral.astype(np.float64), (n, 1))
    pose = _smooth_series(rng, n, 3, cutoff_s=1.2)
    out[:, C.ANGLE] += pose * np.array([0.04, 0.07, 0.03]) * energy  # pitch, yaw, roll
    trans = _smooth_series(rng, n, 3, cutoff_s=1.5)
    out[:, C.TRANS] += trans * np.array([0.025, 0.02, 0.08]) * energy
    crop = _smooth_series(rng, n, 3, cutoff_s=2.0)
    out[:, C.CROP] += crop * np.array([0.01 * identity.neutral[C.CROP][0], 1.5, 1.5])
    exp_noise = _smooth_series(rng, n, 64, cutoff_s=0.6)
    out[:, C.EXP] += exp_noise * IDLE_EXP_STD
    return out


@functools.lru_cache(maxsize=1)
def visemes() -> np.ndarray:
    """(vowels, 64) float64: each vowel's expression offset at full articulation.

    Zero on the components the rig designs (jaw, smile, brow, blink, frown, pucker):
    the speaker drives those explicitly.
    """
    table = np.random.default_rng([GENERATOR_VERSION, 4]).normal(0.0, VISEME_STD, size=(len(_VOWELS), 64))
    table[:, : PUCKER + 1] = 0.0
    return table


def speaker_motion(rng: np.random.Generator, identity: Identity, samples: np.ndarray,
                   syllables: list[Syllable], n: int) -> np.ndarray:
    """(n,73) speaker coefficients: jaw follows the envelope, nods on stressed syllables."""
    out = _base_motion(rng, identity, n, energy=1.0)
    envelope = audio_envelope(samples, n)
    lagged = np.concatenate([np.zeros(MOUTH_LAG), envelope[:-MOUTH_LAG]])
    out[:, C.EXP.start + JAW] += 1.6 * lagged
    rounding = np.zeros(n)
    mouth = np.zeros((n, 64))
    for syl in syllables:
        centre = (syl.start + syl.end) / 2 * FPS + MOUTH_LAG
        width = (syl.end - syl.start) * FPS + 4
        shape = _bump(n, centre, width)
        mouth += shape[:, None] * visemes()[syl.vowel]
        if _VOWELS[syl.vowel][3] > 0:
            rounding = np.maximum(rounding, shape)
        if syl.stress > 0.5:  # emphasis: a nod (down, then back) and raised brows
            nod = _bump(n, syl.start * FPS + 3, 12) - 0.4 * _bump(n, syl.start * FPS + 12, 12)
            out[:, C.ANGLE.start] += 0.07 * syl.stress * nod
            out[:, C.EXP.start + BROW] += 0.8 * syl.stress * _bump(n, centre, 14)
    out[:, C.EXP.start + PUCKER] += 1.0 * rounding * lagged
    out[:, C.EXP] += mouth * lagged[:, None]
    out[:, C.EXP.start + SMILE] += rng.uniform(0.0, 0.4)
    out[:, C.EXP.start + BLINK] += _blinks(rng, n, 3.2)
    return out.astype(np.float32)


def listener_motion(rng: np.random.Generator, identity: Identity, phrases: list[tuple[float, float]],
                    attitude: str, n: int) -> np.ndarray:
    """(n,73) listener coefficients: nods and reactions after the speaker's phrases."""
    out = _base_motion(rng, identity, n, energy=0.6)
    react = {"positive": (SMILE, 1.3, 0.3), "negative": (FROWN, 1.3, 0.3), "neutral": (SMILE, 0.25, 0.05)}
    component, amplitude, baseline = react[attitude]
    expression = np.full(n, baseline)
    nod_gain = {"positive": 0.1, "neutral": 0.07, "negative": 0.045}[attitude]
    frames = np.arange(n, dtype=np.float64)
    for _, end in phrases:
        start = (end + rng.uniform(0.15, 0.4)) * FPS
        if rng.random() < 0.85:
            # a nod: 1-2 cycles of ~2 Hz pitch oscillation under a window
            cycles = int(rng.integers(1, 3))
            period = FPS / rng.uniform(1.6, 2.4)
            local = frames - start
            window = (local >= 0) & (local <= cycles * period)
            out[:, C.ANGLE.start] += nod_gain * np.sin(2 * np.pi * local / period) * window
            if attitude == "negative" and rng.random() < 0.5:  # a slight head shake
                out[:, C.ANGLE.start + 1] += 0.05 * np.sin(2 * np.pi * local / period) * window
        # the expression rises after the phrase and decays over ~1.5 s
        rise = np.clip((frames - start) / 6.0, 0, 1) * np.exp(-np.clip(frames - start, 0, None) / (1.5 * FPS))
        expression = np.maximum(expression, baseline + amplitude * rng.uniform(0.7, 1.0) * rise)
    out[:, C.EXP.start + component] += expression
    if attitude == "positive":
        out[:, C.EXP.start + BROW] += 0.3 * (expression - baseline)
    out[:, C.EXP.start + JAW] += 0.05 * np.abs(_smooth_series(rng, n, 1, cutoff_s=1.0)[:, 0])
    out[:, C.EXP.start + BLINK] += _blinks(rng, n, 2.6)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------- rendering


def composite_frames(rig: RigRenderer, identity: Identity, coeffs: torch.Tensor | np.ndarray,
                     batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Ground-truth frames: the rig-warped person composited over the static background.

    The reference (person over background, neutral pose) and the person matte are
    warped together by ``rig.flow(coeffs, identity.neutral)``; the warped matte then
    selects the moving head over the unmoved background, so unlike plain rig output
    the background does not distort. ``rig`` should pad with ``border``.

    Yields:
        (b,3,H,W) float32 in [0,1].
    """
    import torch

    coeffs_t = torch.as_tensor(np.asarray(coeffs, dtype=np.float32))
    reference = torch.from_numpy(identity.reference()).permute(2, 0, 1)
    layers = torch.cat([reference, torch.from_numpy(identity.matte)[None]], 0)  # (4,H,W)
    background = torch.from_numpy(identity.background).permute(2, 0, 1)[None]
    neutral = torch.from_numpy(identity.neutral)
    height, width = layers.shape[1:]
    with torch.inference_mode():
        for start in range(0, coeffs_t.shape[0], batch_size):
            chunk = coeffs_t[start : start + batch_size]
            warped = rig.warp(layers, rig.flow(chunk, neutral, height, width))
            matte = warped[:, 3:4]
            yield (matte * warped[:, :3] + (1 - matte) * background).clamp_(0, 1)


def gt_rig() -> RigRenderer:
    """The rig the generator renders ground truth with (border padding)."""
    from bench_plugins.renderers.rig import RigRenderer

    return RigRenderer(batch_size=32, padding_mode="border")


# ---------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class ClipPlan:
    index: int
    uuid: str
    video_id: str
    speaker: int
    listener: int
    attitude: str
    seconds: float
    split: str


def plan_clips(seed: int, n_pairs: int, n_identities: int,
               seconds: tuple[float, float]) -> list[ClipPlan]:
    """Which identities talk, for how long, with which attitude, in which split."""
    if n_identities < 2:
        raise ValueError("need at least 2 identities (a speaker and a listener)")
    if n_pairs < 3:
        raise ValueError("need at least 3 pairs (one per split)")
    rng = _rng(seed, 0)
    n_held = max(1, n_pairs // 6)
    splits = ["train"] * (n_pairs - 2 * n_held) + ["val"] * n_held + ["test"] * n_held
    plans = []
    for i in range(n_pairs):
        speaker = i % n_identities
        listener = (speaker + 1 + (i // n_identities) % (n_identities - 1)) % n_identities
        digest = hashlib.sha1(f"vico-mini/{GENERATOR_VERSION}/{seed}/{i}".encode()).hexdigest()
        uuid = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
        duration = round(float(rng.uniform(*seconds)) * FPS) / FPS
        plans.append(ClipPlan(i, uuid, f"conv{i:03d}", speaker, listener,
                              ATTITUDE_CYCLE[i % 3], duration, splits[i]))
    return plans


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    data = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    Image.fromarray(data).save(path, format="JPEG", quality=95)


def clip_coefficients(plan: ClipPlan, identities: list[Identity], seed: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Audio (N,) and speaker/listener coefficients (T,73) of one clip."""
    rng = _rng(seed, 2, plan.index)
    n = round(plan.seconds * FPS)
    samples, syllables, phrases = synthesize_speech(rng, identities[plan.speaker], plan.seconds)
    speaker = speaker_motion(rng, identities[plan.speaker], samples, syllables, n)
    listener = listener_motion(rng, identities[plan.listener], phrases, plan.attitude, n)
    return samples, speaker, listener


def _recon(coeffs: np.ndarray, fixed: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Driver-order (T,73) + id|gamma|tex (187,) -> Deep3DFaceRecon coeff (T,257), params (T,5)."""
    n = coeffs.shape[0]
    coeff = np.zeros((n, 257), dtype=np.float32)
    coeff[:, C.RECON_ID] = fixed[:80]
    coeff[:, C.RECON_GAMMA] = fixed[80:107]
    coeff[:, C.RECON_TEX] = fixed[107:187]
    coeff[:, C.RECON_EXP] = coeffs[:, C.EXP]
    coeff[:, C.RECON_ANGLE] = coeffs[:, C.ANGLE]
    coeff[:, C.RECON_TRANS] = coeffs[:, C.TRANS]
    params = np.zeros((n, 5), dtype=np.float32)
    params[:, 0] = size
    params[:, 1] = size
    params[:, 2:] = coeffs[:, C.CROP]
    return coeff, params


def synthesize(out: Path, *, seed: int = 0, progress: bool = True, n_pairs: int = N_PAIRS,
               seconds: tuple[float, float] = SECONDS, n_identities: int = N_IDENTITIES,
               workers: int = 1) -> Path:
    """Write a vico-mini dataset to ``out`` (created; must be empty or absent).

    Args:
        out: target folder, written in the ViCo challenge layout.
        seed: the dataset seed; same seed and :data:`GENERATOR_VERSION` give identical files.
        progress: show a progress bar.
        n_pairs, seconds, n_identities: size (the defaults make the standard vico-mini;
            tests use smaller sets).
        workers: processes rendering clips in parallel; the output does not depend on
            it. More than 1 uses ``multiprocessing`` spawn, which re-imports the caller's
            ``__main__``: only use it from a script guarded by ``if __name__ == "__main__"``
            (the default, 1, is safe everywhere).

    Returns:
        ``out``.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; synthesize into a new folder")
    with _single_thread():
        _synthesize(out, seed, progress, n_pairs, seconds, n_identities, workers)
    return out


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch single-threaded: reductions then never depend on the core count (the
    output stays bit-identical across machines), and on a busy shared CPU intra-op
    threads cost more than they give (measured 3x slower at load 9 on 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class _ClipResult:
    """What the statistics need from one rendered clip (train clips only)."""

    index: int
    coeffs: list[np.ndarray]  # (T,73) per role
    fixed: list[np.ndarray]  # (T,187) per role
    audio: np.ndarray  # (T,45)


def _render_clip(out: Path, plan: ClipPlan, seed: int, n_identities: int) -> _ClipResult | None:
    """Write every file of one clip; returns the train statistics' inputs (or None)."""
    from ..features.audio import audio_features
    from ..video import VideoWriter, to_uint8
    from . import formats

    with _single_thread():
        identities = _identities(seed, n_identities)
        rig = gt_rig()
        samples, speaker, listener = clip_coefficients(plan, identities, seed)
        wav = out / "audios" / f"{plan.uuid}.wav"
        _write_wav(wav, samples, SAMPLE_RATE)
        result = _ClipResult(plan.index, [], [], np.zeros((0, 45), np.float32))
        for role, coeffs, who in (("speaker", speaker, plan.speaker), ("listener", listener, plan.listener)):
            identity = identities[who]
            stem = f"{plan.uuid}.{role}"
            coeff, params = _recon(coeffs, identity.fixed, SIZE)
            formats.write_recon_mat(out / "recons" / f"{stem}.mat", coeff, params)
            feats = formats.video_feats_from_recon(coeff, params)
            formats.write_video_feats(out / "video_feats" / f"{stem}.bin",
                                      feats[formats.DYNAMIC_KEY], feats[formats.FIXED_KEY])
            with VideoWriter(out / "videos" / f"{stem}.mp4", FPS) as writer:
                for k, frames in enumerate(composite_frames(rig, identity, feats[formats.DYNAMIC_KEY])):
                    pixels = to_uint8(frames)
                    if k == 0:
                        _save_jpeg(out / "first_frames" / f"{stem}.jpg", pixels[0] / 255.0)
                    writer.write_uint8(pixels)
            result.coeffs.append(feats[formats.DYNAMIC_KEY])
            result.fixed.append(feats[formats.FIXED_KEY])
        if plan.split != "train":
            return None
        # from the written wav, so the statistics describe the 16-bit file a reader sees
        result.audio = audio_features(wav, speaker.shape[0])
        return result


@functools.lru_cache(maxsize=4)
def _identities(seed: int, n_identities: int) -> list[Identity]:
    return [make_identity(i, seed) for i in range(n_identities)]


def _synthesize(out: Path, seed: int, progress: bool, n_pairs: int,
                seconds: tuple[float, float], n_identities: int, workers: int) -> None:
    from . import formats

    for sub in ("videos", "audios", "first_frames", "ref_images", "recons", "video_feats"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    identities = _identities(seed, n_identities)
    plans = plan_clips(seed, n_pairs, n_identities, seconds)
    used = sorted({p.speaker for p in plans} | {p.listener for p in plans})
    for i in used:
        _save_jpeg(out / "ref_images" / f"{identities[i].person_id}.jpg", identities[i].reference())

    # Clips are independent (each has its own seeded Generator), so rendering them in
    # parallel processes changes nothing in the output; results are put back in plan order.
    results: list[_ClipResult] = []
    bar = _progress(progress, len(plans))
    try:
        if workers <= 1:
            for plan in plans:
                result = _render_clip(out, plan, seed, n_identities)
                if result is not None:
                    results.append(result)
                if bar is not None:
                    bar.advance(plan.uuid)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            context = multiprocessing.get_context("spawn")  # never fork a process holding torch threads
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {pool.submit(_render_clip, out, plan, seed, n_identities): plan for plan in plans}
                for future in as_completed(futures):
                    result = future.result()
                    if result is not None:
                        results.append(result)
                    if bar is not None:
                        bar.advance(futures[future].uuid)
    finally:
        if bar is not None:
            bar.close()
    results.sort(key=lambda r: r.index)
    train_coeffs = [c for r in results for c in r.coeffs]
    train_fixed = [f for r in results for f in r.fixed]
    train_audio = [r.audio for r in results]

    for split in ("train", "val", "test"):
        rows = [formats.SplitRow(p.video_id, p.uuid, identities[p.speaker].person_id,
                                 identities[p.listener].person_id, p.attitude)
                for p in plans if p.split == split]
        formats.write_split_csv(out / f"{split}.csv", rows)

    def stats(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        stacked = np.concatenate(arrays, 0).astype(np.float64)
        return {"mean": stacked.mean(0).astype(np.float32), "std": stacked.std(0, ddof=1).astype(np.float32)}

    formats.write_mean_std(out / "video_feats_mean_std.bin",
                           {formats.DYNAMIC_KEY: stats(train_coeffs), formats.FIXED_KEY: stats(train_fixed)})
    formats.write_mean_std(out / "audio_feats_mean_std.bin", {formats.AUDIO_KEY: stats(train_audio)})


class _Bar:
    def __init__(self, total: int) -> None:
        from rich.progress import Progress

        self._progress = Progress(transient=True)
        self._progress.start()
        self._task = self._progress.add_task("vico-mini: rendering clips", total=total)

    def advance(self, name: str) -> None:
        self._progress.update(self._task, advance=1, description=f"vico-mini: {name[:8]}")

    def close(self) -> None:
        self._progress.stop()


def _progress(enabled: bool, total: int) -> _Bar | None:
    return _Bar(total) if enabled else None


def vico_mini_dir(seed: int = 0) -> Path:
    """Where the cached vico-mini of this generator version lives."""
    suffix = "" if seed == 0 else f"-seed{seed}"
    return bench_home() / "datasets" / f"vico-mini-v{GENERATOR_VERSION}{suffix}"


def ensure_vico_mini(seed: int = 0, *, progress: bool = True) -> Path:
    """The vico-mini folder, generated on first use (atomically), cached afterwards.

    Generation happens in a temporary sibling folder that is renamed into place once
    complete, so an interrupted run never leaves a half-written dataset behind and two
    concurrent first uses cannot corrupt each other.
    """
    final = vico_mini_dir(seed)
    if (final / COMPLETE_MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        synthesize(tmp, seed=seed, progress=progress)
        (tmp / COMPLETE_MARKER).write_text(f"vico-mini generator {GENERATOR_VERSION} seed {seed}\n")
        if final.exists() and not (final / COMPLETE_MARKER).is_file():
            shutil.rmtree(final)  # a stale, incomplete folder from an older crash
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / COMPLETE_MARKER).is_file():  # someone else won the race: fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
