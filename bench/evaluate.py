"""Score pre-generated videos against ground truth, as the official evaluation does.

:func:`pair_videos` matches ``{uuid}.{role}.mp4`` files of a prediction folder
with the ground truth and checks everything before any scoring: missing and
extra uuids, unreadable files, frame-count and size mismatches (fatal, all
reported at once), audio tracks and frame rates (reported, not fatal).

Decoding: the official scripts read videos with OpenCV (BGR converted to RGB).
Decoders can differ by a few levels on the same mp4, so ``opencv`` is the
default decoder here and scores match the official numbers by construction;
``pyav`` is offered too (see :func:`decoder_difference` for how far apart they are).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import video
from .contracts import ROLE_OF_TASK
from .errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch

DECODERS = ("opencv", "pyav")


@dataclass(frozen=True)
class Problem:
    path: Path
    problem: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class VideoPair:
    uuid: str
    role: str
    pred: Path
    gt: Path
    n_frames: int
    width: int
    height: int


@dataclass
class Pairing:
    pairs: list[VideoPair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.fatal]

    def report(self) -> str:
        lines = [f"{len(self.fatal)} problem(s) found; nothing was scored:"]
        lines += [f"  - {p}" for p in self.fatal]
        if self.warnings:
            lines.append("warnings:")
            lines += [f"  - {p}" for p in self.warnings]
        return "\n".join(lines)


def _video_dir(root: Path) -> Path:
    """A ViCo root keeps videos in ``videos/``; a flat folder holds them directly."""
    return root / "videos" if (root / "videos").is_dir() else root


def _uuids_from_csv(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(path, "split CSV not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "uuid" not in reader.fieldnames:
            raise InputError(path, f"split CSV has no 'uuid' column (columns: {reader.fieldnames})")
        return [row["uuid"].strip() for row in reader if row.get("uuid", "").strip()]


def pair_videos(pred_dir: str | Path, gt_dir: str | Path, task: str,
                split_csv: str | Path | None = None, *, expected_fps: float = 30.0) -> Pairing:
    """Match prediction and ground-truth videos of one task and check them all."""
    if task not in ROLE_OF_TASK:
        raise ConfigError(f"unknown task {task!r}", fix="use --task talking or --task listening")
    role = ROLE_OF_TASK[task]
    pred_root, gt_root = Path(pred_dir), Path(gt_dir)
    for root, what in ((pred_root, "prediction"), (gt_root, "ground-truth")):
        if not root.is_dir():
            raise InputError(root, f"{what} folder not found")
    pred_videos, gt_videos = _video_dir(pred_root), _video_dir(gt_root)
    suffix = f".{role}.mp4"
    on_disk = {p.name[: -len(suffix)]: p for p in pred_videos.glob(f"*{suffix}")}
    gt_on_disk = {p.name[: -len(suffix)]: p for p in gt_videos.glob(f"*{suffix}")}
    wanted = _uuids_from_csv(Path(split_csv)) if split_csv else sorted(gt_on_disk)

    result = Pairing()
    if not wanted:
        result.problems.append(Problem(gt_videos, f"no ground-truth videos named *{suffix}"))
    for uuid in wanted:
        pred, gt = pred_videos / f"{uuid}{suffix}", gt_videos / f"{uuid}{suffix}"
        if not gt.is_file():
            result.problems.append(Problem(gt, "ground-truth video missing"))
            continue
        if not pred.is_file():
            result.problems.append(Problem(pred, "prediction missing"))
            continue
        pair = _check_pair(uuid, role, pred, gt, expected_fps, result.problems)
        if pair is not None:
            result.pairs.append(pair)
    # Without a split CSV the ground truth defines the set, and extras are errors; with
    # one, predictions for other splits may legitimately share the folder.
    for uuid in sorted(set(on_disk) - set(wanted)):
        where = "the split CSV" if split_csv else "the ground truth"
        result.problems.append(Problem(on_disk[uuid], f"extra prediction: uuid not in {where}",
                                       fatal=split_csv is None))
    return result


def _check_pair(uuid: str, role: str, pred: Path, gt: Path, fps: float,
                problems: list[Problem]) -> VideoPair | None:
    infos = {}
    for path in (pred, gt):
        try:
            infos[path] = video.probe(path)
        except InputError as exc:
            problems.append(Problem(path, f"unreadable ({exc.message.split(': ', 1)[-1]})"))
    if len(infos) < 2:
        return None
    p, g = infos[pred], infos[gt]
    ok = True
    if p.n_frames != g.n_frames:
        problems.append(Problem(pred, f"{p.n_frames} frames, ground truth has {g.n_frames} "
                                      "(truncated or padded?)"))
        ok = False
    if (p.width, p.height) != (g.width, g.height):
        problems.append(Problem(pred, f"size {p.width}x{p.height}, ground truth is {g.width}x{g.height}"))
        ok = False
    if p.has_audio:
        problems.append(Problem(pred, "has an audio track (ignored for scoring)", fatal=False))
    if abs(p.fps - fps) > 0.01:
        problems.append(Problem(pred, f"{p.fps:g} fps, expected {fps:g} (frames are compared by index)",
                                fatal=False))
    return VideoPair(uuid, role, pred, gt, g.n_frames, g.width, g.height) if ok else None


def read_frames_opencv(path: str | Path, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Frames decoded by OpenCV as the official scripts do (BGR -> RGB), (b,3,H,W) in [0,1]."""
    import cv2
    import numpy as np
    import torch

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(path, "OpenCV cannot open the video")
    pending: list[np.ndarray] = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            pending.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if len(pending) == batch_size:
                yield torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2).float().div_(255.0)
                pending = []
        if pending:
            yield torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2).float().div_(255.0)
    finally:
        capture.release()


def read_frames(path: str | Path, batch_size: int = 32, decoder: str = "opencv") -> Iterator[torch.Tensor]:
    """Frames of ``path`` with the chosen decoder, (b,3,H,W) float in [0,1]."""
    if decoder == "opencv":
        return read_frames_opencv(path, batch_size)
    if decoder == "pyav":
        return video.read_frames(path, batch_size)
    raise ConfigError(f"unknown decoder {decoder!r}", fix=f"use one of {', '.join(DECODERS)}")


@dataclass(frozen=True)
class DecoderDifference:
    frames: int
    max_abs_levels: float  # in 0..255 levels
    mean_abs_levels: float
    psnr_between: float  # dB between the two decodings


def decoder_difference(path: str | Path) -> DecoderDifference:
    """How far PyAV's decoding of ``path`` is from OpenCV's (the official decoder)."""
    import math

    max_abs, abs_sum, sq_sum, count, frames = 0.0, 0.0, 0.0, 0, 0
    for a, b in zip(read_frames_opencv(path, 16), video.read_frames(path, 16), strict=True):
        diff = (a - b) * 255.0
        max_abs = max(max_abs, float(diff.abs().max()))
        abs_sum += float(diff.abs().sum())
        sq_sum += float((diff / 255.0).pow(2).sum())
        count += diff.numel()
        frames += a.shape[0]
    mse = sq_sum / max(count, 1)
    psnr = math.inf if mse == 0 else -10 * math.log10(mse)
    return DecoderDifference(frames, max_abs, abs_sum / max(count, 1), psnr)
