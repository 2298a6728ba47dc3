"""The ViCo dataset reader (SPEC section 1): challenge layout and full-dataset layout.

A ViCo folder holds split CSVs (``train.csv``, ``val.csv``, ``test.csv`` at the root or
in ``lists/``, ``splits/`` or ``metadata/``) and per-clip files::

    videos/{uuid}.{role}.mp4        ground truth, 30 fps, no audio track
    audios/{uuid}.wav               the conversation audio (any rate, mono or stereo)
    first_frames/{uuid}.{role}.jpg  reference image of each role
    ref_images/{person_id}.jpg      one reference image per person (optional)
    recons/{uuid}.{role}.mat        Deep3DFaceRecon coefficients (optional)
    video_feats/{uuid}.{role}.bin   baseline driver-order coefficients (optional)
    audio_feats/{uuid}.npy          precomputed official audio features (optional)
    video_feats_mean_std.bin, audio_feats_mean_std.bin   (``bench data stats``)

Every per-clip folder may also be split into ``{folder}/{split}/`` (the full dataset and
the official preprocessing scripts do that), and the feature files may sit below
``features/`` (the baseline's training layout). Lookups try all of these.

Samples are lazy: building a split reads only headers (video frame counts by demuxing,
wav headers) and the small coefficient files to validate them; frames are streamed.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..contracts import ROLE_OF_TASK, TASKS, NormStats, Task
from ..errors import BenchError, InputError
from . import formats

if TYPE_CHECKING:
    import torch

ROLES: tuple[str, ...] = ("speaker", "listener")
FPS = 30.0
SPLIT_DIRS: tuple[str, ...] = ("", "lists", "splits", "metadata")
#: how many frames of audio a wav may lack before it counts as truncated (the official
#: features zero-pad a short wav; real ViCo wavs end up to a few frames early)
AUDIO_SLACK_FRAMES = 5


def load_coeffs(path: Path) -> np.ndarray:
    """(T,73) driver-order coefficients from a ``.bin`` (video_feats) or ``.mat`` (recons)."""
    from .. import coeffs

    if path.suffix == ".mat":
        coeff, params = formats.read_recon_mat(path)
        return coeffs.from_recon(coeff, params)
    return formats.read_video_feats(path)[formats.DYNAMIC_KEY]


@dataclass
class ClipFiles:
    """Where one clip's files are (None: not present)."""

    wav: Path | None = None
    audio_npy: Path | None = None
    video: dict[str, Path | None] = field(default_factory=dict)
    first_frame: dict[str, Path | None] = field(default_factory=dict)
    coeffs: dict[str, Path | None] = field(default_factory=dict)
    ref_image: dict[str, Path | None] = field(default_factory=dict)


class ViCoSample:
    """One clip of a split for one task; follows :class:`bench.contracts.Sample`.

    Attributes beyond the contract: ``split``, ``row`` (the CSV row), ``files``
    (:class:`ClipFiles`), ``person_id`` (the generated role's person).
    """

    def __init__(self, *, split: str, task: Task, row: formats.SplitRow, files: ClipFiles,
                 n_frames: int, fps: float = FPS) -> None:
        self.split = split
        self.task: Task = task
        self.role = ROLE_OF_TASK[task]
        self.row = row
        self.uuid = row.uuid
        self.attitude = row.attitude
        self.files = files
        self.n_frames = n_frames
        self.fps = fps
        self.person_id = row.speaker_id if self.role == "speaker" else row.listener_id

    def __repr__(self) -> str:
        return f"ViCoSample({self.split}/{self.uuid}, {self.task}, {self.n_frames} frames)"

    def audio_features(self) -> torch.Tensor:
        """(T,F) float32 official audio features (computed from the wav, cached on disk)."""
        import torch

        from ..features.audio import cached_audio_features

        if self.files.wav is not None:
            feats = cached_audio_features(self.files.wav, self.n_frames)
        elif self.files.audio_npy is not None:
            feats = read_audio_npy(self.files.audio_npy, self.n_frames)
        else:
            raise InputError(None, f"clip {self.uuid}: no audios/{self.uuid}.wav",
                             fix="add the wav (or audio_feats/{uuid}.npy)")
        return torch.from_numpy(np.ascontiguousarray(feats))

    def reference_image(self) -> torch.Tensor:
        """(3,H,W) float32 in [0,1]: ``first_frames/{uuid}.{role}.jpg``, else frame 0 of the video."""
        image = self.files.first_frame.get(self.role)
        if image is not None:
            return read_image(image)
        return next(iter(self.gt_frames(1)))[0]

    def gt_frames(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Stream the generated role's ground-truth frames, (b,3,H,W) float32 in [0,1]."""
        from ..video import read_frames

        video = self.files.video.get(self.role)
        if video is None:
            raise InputError(None, f"clip {self.uuid}: no ground-truth {self.role} video")
        return read_frames(video, batch_size)

    def _coeffs(self, role: str) -> torch.Tensor | None:
        import torch

        path = self.files.coeffs.get(role)
        if path is None:
            return None
        return torch.from_numpy(np.ascontiguousarray(load_coeffs(path)))

    def gt_coeffs(self) -> torch.Tensor | None:
        """(T,73) driver-order coefficients of the generated role, or None."""
        return self._coeffs(self.role)

    def speaker_coeffs(self) -> torch.Tensor | None:
        """(T,73) the speaker's coefficients for listening samples; None for talking."""
        return self._coeffs("speaker") if self.task == "listening" else None


def read_image(path: Path) -> torch.Tensor:
    """(3,H,W) float32 RGB in [0,1] from an image file."""
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(path, f"unreadable image ({exc})", fix="re-extract the first frame") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def read_audio_npy(path: Path, n_frames: int) -> np.ndarray:
    try:
        feats = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable .npy ({exc})") from exc
    if feats.ndim != 2 or feats.shape[0] < n_frames or not np.all(np.isfinite(feats)):
        raise InputError(path, f"audio features must be finite (T>={n_frames},F), got {feats.shape}")
    return feats[:n_frames].astype(np.float32)


class ViCoDataset:
    """A ViCo-layout folder; follows :class:`bench.contracts.Dataset`.

    Args:
        root: the dataset folder.
        name: display name (default ``vico``).
        strict: raise on the first bad sample instead of skipping it.

    Bad samples found while building a split are recorded in :attr:`problems`
    (``InputError`` objects naming the file), reported with a warning, and left out.
    """

    def __init__(self, root: str | Path, *, name: str = "vico", strict: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.name = name
        self.strict = strict
        self.problems: list[InputError] = []
        self._rows: dict[str, list[formats.SplitRow]] = {}
        self._samples: dict[tuple[str, str], list[ViCoSample]] = {}
        if not self.root.is_dir():
            raise InputError(self.root, "dataset folder not found",
                             fix="pass the folder holding the split CSVs and videos/ audios/")
        if not self._split_files():
            raise InputError(self.root, "no split CSV (train.csv / val.csv / test.csv) found",
                             fix="a ViCo folder has split CSVs at its root or in lists/")

    def __repr__(self) -> str:
        return f"ViCoDataset({self.name!r}, {str(self.root)!r})"

    # ------------------------------------------------------------------ layout

    def _split_files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for sub in SPLIT_DIRS:
            folder = self.root / sub if sub else self.root
            if folder.is_dir():
                for csv_path in sorted(folder.glob("*.csv")):
                    found.setdefault(csv_path.stem, csv_path)
        return found

    def splits(self) -> list[str]:
        order = {"train": 0, "val": 1, "test": 2}
        return sorted(self._split_files(), key=lambda s: (order.get(s, 3), s))

    def rows(self, split: str) -> list[formats.SplitRow]:
        """The CSV rows of ``split`` (raises InputError for a malformed CSV)."""
        if split not in self._rows:
            files = self._split_files()
            if split not in files:
                raise InputError(self.root, f"no split '{split}' (found: {', '.join(self.splits())})",
                                 fix="pass one of the splits listed")
            self._rows[split] = formats.read_split_csv(files[split])
        return self._rows[split]

    def _find(self, folders: Sequence[str], split: str, filename: str) -> Path | None:
        for folder in folders:
            for base in (self.root / folder, self.root / "features" / folder):
                for candidate in (base / filename, base / split / filename):
                    if candidate.is_file():
                        return candidate
        return None

    def clip_files(self, split: str, row: formats.SplitRow) -> ClipFiles:
        u = row.uuid
        files = ClipFiles(
            wav=self._find(("audios", "audio"), split, f"{u}.wav"),
            audio_npy=self._find(("audio_feats",), split, f"{u}.npy"),
        )
        for role in ROLES:
            person = row.speaker_id if role == "speaker" else row.listener_id
            files.video[role] = self._find(("videos", "video"), split, f"{u}.{role}.mp4")
            files.first_frame[role] = self._find(("first_frames",), split, f"{u}.{role}.jpg")
            files.coeffs[role] = (self._find(("video_feats",), split, f"{u}.{role}.bin")
                                  or self._find(("recons",), split, f"{u}.{role}.mat"))
            files.ref_image[role] = self._find(("ref_images",), split, f"{person}.jpg")
        return files

    # -------------------------------------------------------------- validation

    def inspect_clip(self, split: str, row: formats.SplitRow,
                     tasks: Sequence[str] = TASKS) -> tuple[ClipFiles, int | None, list[InputError]]:
        """Check one clip's files for the given tasks.

        Returns:
            its files, its frame count (None when unknown) and every problem found.
        """
        from ..video import probe

        files = self.clip_files(split, row)
        problems: list[InputError] = []
        u = row.uuid
        generated = {ROLE_OF_TASK[t] for t in tasks}
        # the speaker's coefficients drive the listener, so listening needs the speaker too
        needed = generated | ({"speaker"} if "listening" in tasks else set())
        roles = [r for r in ROLES if r in needed]
        counts: dict[str, tuple[int, Path]] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for role in roles:
            video = files.video[role]
            if video is None:
                if role in generated:
                    problems.append(InputError(self.root / "videos" / f"{u}.{role}.mp4",
                                               "ground-truth video missing"))
                continue
            try:
                info = probe(video)
            except InputError as exc:
                problems.append(exc)
                continue
            if info.n_frames == 0:
                problems.append(InputError(video, "video has no frames (truncated?)"))
                continue
            if abs(info.fps - FPS) > 0.01:
                problems.append(InputError(video, f"video is {info.fps:g} fps, ViCo is 30 fps",
                                           fix="re-encode at 30 fps"))
            counts[role] = (info.n_frames, video)
            sizes[role] = (info.width, info.height)
        if len(counts) == 2 and counts["speaker"][0] != counts["listener"][0]:
            problems.append(InputError(counts["listener"][1],
                                       f"{counts['listener'][0]} frames but the speaker video has "
                                       f"{counts['speaker'][0]}"))
        if len(sizes) == 2 and sizes["speaker"] != sizes["listener"]:
            problems.append(InputError(counts["listener"][1], f"frame size {sizes['listener']} "
                                       f"differs from the speaker video's {sizes['speaker']}"))
        n_frames = min((c for c, _ in counts.values()), default=None)

        for role in roles:
            path = files.coeffs[role]
            if path is None:
                if "listening" in tasks and role == "speaker":
                    problems.append(InputError(self.root / "video_feats" / f"{u}.speaker.bin",
                                               "speaker coefficients missing (the listening task "
                                               "needs them)", fix="add video_feats/ or recons/ files"))
                continue
            try:
                coeffs = load_coeffs(path)
            except InputError as exc:
                problems.append(exc)
                continue
            if role in counts and coeffs.shape[0] != counts[role][0]:
                problems.append(InputError(path, f"{coeffs.shape[0]} coefficient frames but the "
                                           f"video has {counts[role][0]}",
                                           fix="re-extract the coefficients from this video"))
            elif n_frames is None:
                n_frames = coeffs.shape[0]

        problems.extend(self._check_audio(files, u, n_frames))
        for role in sorted(generated):
            image = files.first_frame[role]
            if image is not None:
                try:
                    height, width = read_image(image).shape[1:]
                except InputError as exc:
                    problems.append(exc)
                    continue
                if role in sizes and sizes[role] != (width, height):
                    problems.append(InputError(image, f"first frame is {width}x{height}, the video "
                                               f"is {sizes[role][0]}x{sizes[role][1]}",
                                               fix="re-extract the first frame from the video"))
        return files, n_frames, problems

    def _check_audio(self, files: ClipFiles, uuid: str, n_frames: int | None) -> list[InputError]:
        if files.wav is None:
            if files.audio_npy is None:
                return [InputError(self.root / "audios" / f"{uuid}.wav", "audio missing")]
            return []
        import soundfile as sf

        try:
            info = sf.info(str(files.wav))
        except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError
            return [InputError(files.wav, f"unreadable wav ({exc})", fix="re-extract the audio")]
        if info.frames == 0:
            return [InputError(files.wav, "wav has no samples (truncated?)")]
        if n_frames is not None:
            have = info.frames / int(info.samplerate / FPS)
            if have < n_frames - AUDIO_SLACK_FRAMES:
                return [InputError(files.wav, f"wav covers {have:.1f} video frames, the video has "
                                   f"{n_frames} (truncated?)", fix="re-extract the audio")]
        return []

    # ----------------------------------------------------------------- samples

    def samples(self, split: str, task: Task) -> list[ViCoSample]:
        """Valid samples of ``split`` for ``task``; bad ones go to :attr:`problems`.

        Raises:
            InputError: the split's CSV is malformed, or (``strict``) any sample is bad.
        """
        if task not in TASKS:
            raise BenchError(f"unknown task '{task}'", fix=f"use one of {', '.join(TASKS)}")
        key = (split, task)
        if key in self._samples:
            return self._samples[key]
        out: list[ViCoSample] = []
        bad: list[InputError] = []
        for row in self.rows(split):
            files, n_frames, problems = self.inspect_clip(split, row, (task,))
            if n_frames is None and not problems:
                problems = [InputError(self.root, f"clip {row.uuid}: no video and no coefficients")]
            if problems:
                if self.strict:
                    raise problems[0]
                bad.extend(problems)
                continue
            assert n_frames is not None
            out.append(ViCoSample(split=split, task=task, row=row, files=files, n_frames=n_frames))
        if bad:
            self.problems.extend(bad)
            shown = "\n  ".join(str(p).splitlines()[0] for p in bad[:5])
            more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
            warnings.warn(f"{self.name} {split}/{task}: skipped bad samples ({len(bad)} problems):\n"
                          f"  {shown}{more}", stacklevel=2)
        self._samples[key] = out
        return out

    # ------------------------------------------------------------------- stats

    def _stats_file(self, name: str) -> Path | None:
        for candidate in (self.root / name, self.root / "features" / name):
            if candidate.is_file():
                return candidate
        return None

    def norm_stats(self) -> NormStats:
        """Mean/std from ``video_feats_mean_std.bin`` and ``audio_feats_mean_std.bin``."""
        import torch

        found = {}
        for name in ("video_feats_mean_std.bin", "audio_feats_mean_std.bin"):
            path = self._stats_file(name)
            if path is None:
                raise InputError(self.root / name, "normalisation statistics missing",
                                 fix=f"run `bench data stats {self.root}`")
            found[name] = formats.read_mean_std(path)
        video = found["video_feats_mean_std.bin"]
        if formats.DYNAMIC_KEY not in video:
            raise InputError(self._stats_file("video_feats_mean_std.bin"),
                             f"no '{formats.DYNAMIC_KEY}' entry", fix=f"run `bench data stats {self.root}`")
        audio = next(iter(found["audio_feats_mean_std.bin"].values()))
        dyn = video[formats.DYNAMIC_KEY]
        if dyn["mean"].shape != (73,):
            raise InputError(self._stats_file("video_feats_mean_std.bin"),
                             f"'{formats.DYNAMIC_KEY}' mean has shape {dyn['mean'].shape}, expected (73,)")
        return NormStats(
            coeff_mean=torch.from_numpy(dyn["mean"]), coeff_std=torch.from_numpy(dyn["std"]),
            audio_mean=torch.from_numpy(audio["mean"]), audio_std=torch.from_numpy(audio["std"]),
        )

    # -------------------------------------------------------------------- hash

    def data_files(self) -> list[Path]:
        """Every non-hidden file below the root, sorted (what :meth:`content_hash` covers)."""
        out: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
        return out

    def content_hash(self) -> str:
        """SHA-256 over every file's relative path and bytes.

        Hashing gigabytes of video is slow, so the result is cached under
        ``cache_dir("dataset_hash")`` keyed by the files' paths, sizes and mtimes:
        any change to the folder recomputes it.
        """
        from ..paths import cache_dir, file_sha256

        files = self.data_files()
        listing = hashlib.sha256(str(self.root.resolve()).encode())
        for path in files:
            st = path.stat()
            listing.update(f"{path.relative_to(self.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        memo = cache_dir("dataset_hash") / f"{listing.hexdigest()}.txt"
        if memo.is_file():
            cached = memo.read_text().strip()
            if len(cached) == 64:
                return cached
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path.relative_to(self.root).as_posix()}\0{file_sha256(path)}\n".encode())
        result = digest.hexdigest()
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(result)
        os.replace(tmp, memo)
        return result

    # ------------------------------------------------------------------ extras

    def describe(self) -> dict[str, Any]:
        """Split sizes (rows per split) for listings."""
        return {split: len(self.rows(split)) for split in self.splits()}
