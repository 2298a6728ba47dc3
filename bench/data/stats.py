"""Normalisation statistics of a ViCo training split (the official mean/std files).

Per dimension, the mean and the *unbiased* standard deviation over all training frames
(both roles for coefficients, one row per frame for audio), as the official
``statistics_mean_std.py`` computes them with ``torch.mean`` / ``torch.std``.
Audio features are computed from each clip's wav (cached); a clip with only the
official precomputed ``audio_feats/{uuid}.npy`` uses that instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import formats
from .vico import ViCoDataset, load_coeffs, read_audio_npy

VIDEO_STATS = "video_feats_mean_std.bin"
AUDIO_STATS = "audio_feats_mean_std.bin"


@dataclass
class SplitStats:
    """Mean/std per key (``angle.exp.trans``, ``id.gamma.tex``, ``audio``) and what was skipped."""

    video: dict[str, dict[str, np.ndarray]]
    audio: dict[str, np.ndarray]
    n_clips: int
    n_frames: int
    problems: list[InputError] = field(default_factory=list)


def mean_std(rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-column mean and unbiased std (ddof=1) of the stacked ``(T_i, D)`` arrays."""
    stacked = np.concatenate(rows, axis=0).astype(np.float64)
    if stacked.shape[0] < 2:
        raise ValueError("need at least 2 frames for an unbiased std")
    return {"mean": stacked.mean(axis=0).astype(np.float32),
            "std": stacked.std(axis=0, ddof=1).astype(np.float32)}


def compute_stats(root: str | Path, split: str = "train", *, strict: bool = False) -> SplitStats:
    """Statistics of ``split`` in the ViCo folder ``root``; bad clips are skipped unless strict."""
    from ..features.audio import cached_audio_features

    dataset = ViCoDataset(root, strict=strict)
    dynamic: list[np.ndarray] = []
    fixed: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    problems: list[InputError] = []
    all_fixed = True
    n_clips = 0
    for row in dataset.rows(split):
        files, n_frames, found = dataset.inspect_clip(split, row, ("talking", "listening"))
        roles = [r for r in ("speaker", "listener") if files.coeffs[r] is not None]
        if not roles and not found:
            found = [InputError(root, f"clip {row.uuid}: no coefficients (video_feats/ or recons/)")]
        if n_frames is None and not found:
            found = [InputError(root, f"clip {row.uuid}: frame count unknown (no video)")]
        if found:
            if strict:
                raise found[0]
            problems.extend(found)
            continue
        assert n_frames is not None
        for role in roles:
            path = files.coeffs[role]
            assert path is not None
            dynamic.append(load_coeffs(path))
            fixed_part = _fixed_coeffs(path)
            if fixed_part is None:
                all_fixed = False
            else:
                fixed.append(fixed_part)
        if files.wav is not None:
            audio.append(cached_audio_features(files.wav, n_frames))
        elif files.audio_npy is not None:  # official precomputed features only
            audio.append(read_audio_npy(files.audio_npy, n_frames))
        n_clips += 1
    if not dynamic or not audio:
        raise InputError(Path(root), f"split '{split}' has no usable clips "
                         f"({len(problems)} problems)", fix=f"run `bench data check {root}`")
    video = {formats.DYNAMIC_KEY: mean_std(dynamic)}
    if all_fixed and fixed:
        video[formats.FIXED_KEY] = mean_std(fixed)
    return SplitStats(video=video, audio=mean_std(audio), n_clips=n_clips,
                      n_frames=sum(len(a) for a in audio), problems=problems)


def _fixed_coeffs(path: Path) -> np.ndarray | None:
    if path.suffix == ".mat":
        coeff, params = formats.read_recon_mat(path)
        return formats.video_feats_from_recon(coeff, params)[formats.FIXED_KEY]
    return formats.read_video_feats(path).get(formats.FIXED_KEY)


def write_stats(stats: SplitStats, out: str | Path) -> tuple[Path, Path]:
    """Write the two official files into folder ``out``; returns their paths."""
    out = Path(out)
    video_path, audio_path = out / VIDEO_STATS, out / AUDIO_STATS
    formats.write_mean_std(video_path, stats.video)
    formats.write_mean_std(audio_path, {formats.AUDIO_KEY: stats.audio})
    return video_path, audio_path
