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

    from .harness import ClipResult, MetricChoice
    from .metric import Metric

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
    infos = []  # a list, not a dict by path: pred and gt may be the same file
    for path in (pred, gt):
        try:
            infos.append(video.probe(path))
        except InputError as exc:
            problems.append(Problem(path, f"unreadable ({exc.message.split(': ', 1)[-1]})"))
    if len(infos) < 2:
        return None
    p, g = infos
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


# --------------------------------------------------------------------------- scoring
#: Version of the external-video evaluation path (part of every eval cell id).
EVAL_VERSION = "1"


@dataclass
class EvalResult:
    """What :func:`evaluate_videos` produced.

    ``values``/``cis`` are keyed by metric value key (``psnr``, ``lmd_no_face_frames``...);
    ``cell_id``/``spec`` identify the cell written to the store (if one was given).
    """

    cell_id: str
    spec: dict[str, object]
    pairing: Pairing
    values: dict[str, float]
    cis: dict[str, tuple[float | None, float | None]]
    directions: dict[str, bool | None]
    labels: dict[str, str]
    skipped: list[str]
    n_clips: int
    n_failed: int
    frames: int
    seconds: float
    clip_errors: dict[str, str] = field(default_factory=dict)
    stored: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def _folder_hash(paths: list[Path]) -> str:
    """SHA-256 over the names and bytes of ``paths`` (the scored files of a folder)."""
    import hashlib

    from .paths import file_sha256

    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _gt_dataset(gt_root: Path, gt_paths: list[Path]) -> dict[str, str]:
    """The dataset entry of an eval cell: a ViCo root (vico-mini included) is named and
    hashed as ``bench run`` does, so both kinds of cells share leaderboards; any other
    folder is named after itself and hashed over its scored videos."""
    import contextlib

    name, content = gt_root.name, ""
    if (gt_root / "videos").is_dir() and any(gt_root.glob("*.csv")):
        with contextlib.suppress(Exception):
            from .data.synth import vico_mini_dir
            from .data.vico import ViCoDataset

            is_mini = gt_root.resolve() == Path(vico_mini_dir(0)).resolve()
            ds = ViCoDataset(gt_root, name="vico-mini" if is_mini else "vico")
            name, content = ds.name, ds.content_hash()
    if not content:
        content = _folder_hash(gt_paths)
    return {"name": name, "content_hash": content}


def _video_coeff_extractor() -> str | None:
    """A registered coefficient extractor that works on frames (source='video'), if any."""
    import contextlib

    import bench.plugins

    from .registry import resolve_target

    registry = bench.plugins.session().registry
    for name in registry.names("coeff_extractor"):
        with contextlib.suppress(Exception):
            target = resolve_target(registry.get("coeff_extractor", name).spec.target)
            if getattr(target, "source", None) == "video":
                return name
    return None


#: Metrics scored from coefficients; on external videos only through a video extractor.
COEFF_METRICS = ("expfd", "anglefd", "transfd")


def _choose_metrics(names: list[str] | None, task: str, device: str) -> tuple[list[MetricChoice], list[str]]:
    """Metric choices for external videos, and why any were skipped."""
    from . import harness

    extractor = _video_coeff_extractor()
    why = ("needs coefficients: external videos have none and no coeff_extractor with "
           "source=video is installed")
    options: dict[str, dict[str, object]] = {}
    if extractor is not None:
        options = {n: {"extractor": extractor} for n in COEFF_METRICS}
    skipped: list[str] = []
    wanted = None
    if names is not None:
        wanted = [n for n in names if extractor is not None or n not in COEFF_METRICS]
        skipped += [f"{n} ({why})" for n in names if n not in wanted]
        if not wanted:
            raise ConfigError("no metric left to score external videos",
                              fix="pass --metrics psnr,ssim,fid (coefficient metrics need a video extractor)")
    chosen, more = harness.resolve_metrics(wanted, task, options, device)
    kept: list[MetricChoice] = []
    for choice in chosen:
        if getattr(choice.instance, "frame_level", True):
            kept.append(choice)
        else:  # clip-level metrics read coefficients, which external videos do not have
            skipped.append(f"{choice.name} ({why})")
    if not kept:
        raise ConfigError("no metric left to score external videos",
                          fix="pass --metrics psnr,ssim,fid (coefficient metrics need a video extractor)")
    return kept, more + skipped


def _reference_image(gt_root: Path, pair: VideoPair, decoder: str) -> torch.Tensor:
    """(3,H,W) in [0,1]: ViCo's ``first_frames/{uuid}.{role}.jpg`` if present, else GT frame 0."""
    image = gt_root / "first_frames" / f"{pair.uuid}.{pair.role}.jpg"
    if image.is_file():
        from .data.vico import read_image

        return read_image(image)
    return next(iter(read_frames(pair.gt, 1, decoder)))[0]


def _score_pair(pair: VideoPair, index: int, gt_root: Path, metrics: dict[str, Metric],
                batch_size: int, decoder: str, device: str) -> ClipResult:
    """Stream one pair through the metrics; a ``harness.ClipResult`` with per-clip states.

    Both videos are decoded in background threads (bounded queues), so decoding
    overlaps metric work; metrics get aligned chunks of ``batch_size`` frames, and
    ground-truth-side caches are keyed by the GT file's SHA-256 + decoder + frame range.
    """
    import time

    import torch

    from . import harness
    from .paths import file_sha256

    t0 = time.perf_counter()
    for m in metrics.values():
        m.reset()
    kwargs_of = {n: harness._update_kwargs(m) for n, m in metrics.items()}
    gt_sha = file_sha256(pair.gt)
    needs_ref = any("reference" in kw[0] for kw in kwargs_of.values())
    reference = _reference_image(gt_root, pair, decoder).to(device) if needs_ref else None
    pred_stream = harness._Prefetch(lambda: harness.rechunk(read_frames(pair.pred, batch_size, decoder), batch_size))
    gt_stream = harness._Prefetch(lambda: harness.rechunk(read_frames(pair.gt, batch_size, decoder), batch_size))
    done = 0
    try:
        with torch.inference_mode():
            while True:
                frames, gt_frames = pred_stream.get(), gt_stream.get()
                if frames is harness._DONE or gt_frames is harness._DONE:
                    if frames is not gt_frames:
                        raise harness.ClipFailure(
                            f"{pair.pred.name}: decoded frame counts differ from the ground truth "
                            f"after {done} frames")
                    break
                if frames.shape != gt_frames.shape:
                    raise harness.ClipFailure(
                        f"{pair.pred.name}: frames {done}..: shape {tuple(frames.shape)} vs ground truth "
                        f"{tuple(gt_frames.shape)}")
                b = int(frames.shape[0])
                frames, gt_frames = frames.to(device), gt_frames.to(device)
                # the harness's filename-safe key, with this GT file's hash (+ decoder) in
                # place of the dataset hash: a second evaluation of the same GT hits the caches
                key = harness.gt_key(f"{gt_sha[:16]}{decoder}", pair.uuid, pair.role, done, done + b)
                avail = {"frames": frames, "gt_frames": gt_frames, "reference": reference}
                for name, m in metrics.items():
                    inputs, takes_key = kwargs_of[name]
                    kw = {i: avail[i] for i in inputs if i in avail}
                    if takes_key:
                        kw["gt_key"] = key
                    m.update(**kw)
                done += b
    finally:
        pred_stream.close()
        gt_stream.close()
    if done == 0:
        raise harness.ClipFailure(f"{pair.pred.name}: no frames decoded")
    states = {name: m.stored_state() for name, m in metrics.items()}  # restored where consumed
    values: dict[str, float] = {}
    for name, m in metrics.items():
        if not harness._per_clip_values(name, m):
            continue
        try:
            vals = m.compute_state(m.state())
        except Exception:  # a per-clip value may be undefined; the pooled one still is
            continue
        values.update({k: float(v) for k, v in vals.items()})
    clip = harness.ClipResult(index, pair.uuid, done, states, values)
    clip.wall = time.perf_counter() - t0
    return clip


def evaluate_videos(
    pred_dir: str | Path,
    gt_dir: str | Path,
    task: str,
    *,
    split_csv: str | Path | None = None,
    name: str | None = None,
    metrics: list[str] | None = None,
    decoder: str = "opencv",
    allow_partial: bool = False,
    store: str | Path | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    n_resamples: int | None = None,
    seed: int = 0,
    pairing: Pairing | None = None,
) -> EvalResult:
    """Score a folder of ``{uuid}.{role}.mp4`` videos against the ground truth.

    Pools as the challenge does (each metric's merged state over all frames of all
    videos), bootstraps CIs over clips as the harness does, and (with ``store``)
    writes one cell whose driver and renderer are the external method ``name`` and
    whose spec holds the prediction folder's content hash, so it sits beside
    ``bench run`` cells in ``bench.results``, leaderboards and gates.

    Raises:
        InputError: any fatal pairing problem (all listed in one message) unless
            ``allow_partial``, in which case only the valid pairs are scored.
    """
    import time

    from . import harness
    from .store import Store, bootstrap_ci_values, run_environment

    if decoder not in DECODERS:
        raise ConfigError(f"unknown decoder {decoder!r}", fix=f"use one of {', '.join(DECODERS)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    pairing = pairing or pair_videos(pred_dir, gt_dir, task, split_csv)
    if pairing.fatal and not allow_partial:
        raise InputError(Path(pred_dir), pairing.report(),
                         fix="fix the files listed, or pass --allow-partial to score the valid pairs only")
    if not pairing.pairs:
        raise InputError(Path(pred_dir), "no valid prediction/ground-truth pair to score:\n" + pairing.report())
    device = harness.resolve_device(device)
    choices, skipped = _choose_metrics(metrics, task, device)
    instances: dict[str, Metric] = {c.name: c.instance for c in choices}
    gt_root = Path(gt_dir)
    method = name or Path(pred_dir).resolve().name
    pred_hash = _folder_hash([p.pred for p in pairing.pairs])
    external = {
        "name": method, "version": EVAL_VERSION, "impl_version": "",
        "options": {"external": True, "pred_hash": pred_hash, "decoder": decoder},
        "plugin": "external",
    }
    spec: dict[str, object] = {
        "harness": harness.HARNESS_VERSION,
        "dataset": _gt_dataset(gt_root, [p.gt for p in pairing.pairs]),
        "split": Path(split_csv).stem if split_csv else "all",
        "task": task,
        "driver": external,
        "renderer": dict(external),
        "postproc": [],
        "metrics": [harness._metric_spec(c) for c in choices],
        "seed": int(seed),
        "batch_size": int(batch_size),
        "precision": "fp32",
        "limit": None,
        "eval": {"version": EVAL_VERSION, "uuids": sorted(p.uuid for p in pairing.pairs)},
    }
    cid = harness.cell_id(spec)

    start = time.perf_counter()
    clips: list[ClipResult] = []
    for index, pair in enumerate(pairing.pairs):
        try:
            clips.append(_score_pair(pair, index, gt_root, instances, batch_size, decoder, device))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # recorded per clip, like the harness
            for m in instances.values():
                m.reset()
            clips.append(harness.ClipResult(index, pair.uuid, pair.n_frames, {}, {},
                                            error=f"{type(exc).__name__}: {exc}"))
    wall = time.perf_counter() - start
    ok = [c for c in clips if c.error is None]
    frames = sum(c.n_frames for c in ok)

    values: dict[str, float] = {}
    cis: dict[str, tuple[float | None, float | None]] = {}
    directions: dict[str, bool | None] = {}
    labels: dict[str, str] = {}
    for mname, metric in instances.items():
        states = [metric.restore_state(c.states[mname]) for c in ok]
        dirs = metric.directions() if hasattr(metric, "directions") else {mname: metric.higher_is_better}
        directions.update(dirs)
        labels[mname] = str(getattr(metric, "label", ""))
        if not states:
            continue
        values.update(metric.compute_state(metric.merge(states)))
        cis.update(bootstrap_ci_values(metric, states, n_resamples=n_resamples, seed=seed))

    result = EvalResult(cid, spec, pairing, values, cis, directions, labels, skipped, len(ok),
                        len(clips) - len(ok), frames, wall,
                        {c.uuid: c.error for c in clips if c.error is not None})
    if store is not None:
        metric_info = {
            n: {"higher_is_better": bool(getattr(m, "higher_is_better", True)), "backend": str(m.backend),
                "label": str(getattr(m, "label", "")), "frame_level": True}
            for n, m in instances.items()
        }
        shard = harness.ShardResult(
            cell_id=cid, shard=0, n_shards=1, clips=clips,
            stage_seconds={"metrics": wall}, io_busy=0.0, frames=frames, wall=wall, warmup_clips=0,
            peak_host_bytes=harness.PeakMemory("cpu").host_bytes(), peak_device_bytes=None,
            device=harness._device_name(device), metric_info=metric_info,
        )
        label = f"{method} | {method} | none"
        with Store(store) as st:
            st.add_cell(cid, spec, label)
            run_id = st.start_run(run_environment(device, ["bench", "eval", str(pred_dir), str(gt_dir)]))
            status = "failed"
            try:
                st.prepare_cell(cid, 1, force=True)
                st.write_shard(shard, run_id=run_id)
                st.finish_cell(cid, 1, metrics=instances, n_resamples=n_resamples, seed=seed)
                status = "finished"
            finally:
                st.end_run(run_id, status)
        result.stored = True
    return result
