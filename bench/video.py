"""Video decoding and encoding through PyAV (FFmpeg bundled in the wheel).

PyAV is chosen over OpenCV and imageio: it ships FFmpeg in its wheel (no system
codecs needed), decodes frame by frame so clips stream in bounded memory, gives
exact frame counts and stream metadata (fps, audio tracks), and encodes H.264
with explicit pixel format and quality.

Frames cross this module as ``float32 (b,3,H,W)`` RGB in ``[0,1]``; decoding
yields batches so a whole clip is never held in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch

DEFAULT_FPS = 30


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    n_frames: int
    fps: float
    width: int
    height: int
    has_audio: bool
    codec: str


def _open(path: str | Path) -> Any:
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "video file not found")
    try:
        return av.open(str(path))
    except Exception as exc:  # av raises its own error types per FFmpeg error
        raise InputError(path, f"cannot open video ({exc})", fix="re-encode or re-download it") from exc


def probe(path: str | Path, *, count: bool = True) -> VideoInfo:
    """Stream metadata; with ``count`` the frames are counted by demuxing (exact)."""
    container = _open(path)
    try:
        if not container.streams.video:
            raise InputError(path, "file has no video stream")
        stream = container.streams.video[0]
        n_frames = stream.frames
        if count or not n_frames:
            n_frames = sum(1 for packet in container.demux(stream) if packet.size)
        rate = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
        return VideoInfo(
            path=Path(path),
            n_frames=int(n_frames),
            fps=float(rate),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            has_audio=bool(container.streams.audio),
            codec=stream.codec_context.name,
        )
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"cannot read video stream ({exc})") from exc
    finally:
        container.close()


def iter_frames_uint8(path: str | Path) -> Iterator[np.ndarray]:
    """Decoded frames one at a time, (H,W,3) uint8 RGB."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except Exception as exc:
            raise InputError(path, f"decoding failed mid-stream ({exc}); the file may be truncated") from exc
    finally:
        container.close()


def read_frames(path: str | Path, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Decoded frames in batches: (b,3,H,W) float32 RGB in [0,1]."""
    import numpy as np
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pending: list[np.ndarray] = []
    for frame in iter_frames_uint8(path):
        pending.append(frame)
        if len(pending) == batch_size:
            yield _to_tensor(np.stack(pending), torch)
            pending = []
    if pending:
        yield _to_tensor(np.stack(pending), torch)


def _to_tensor(stack: np.ndarray, torch: Any) -> torch.Tensor:
    return torch.from_numpy(stack).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(b,3,H,W) float in [0,1] -> (b,H,W,3) uint8, rounded to nearest."""
    return (
        frames.detach().clamp(0, 1).mul(255.0).round().to(dtype=__import__("torch").uint8)
        .permute(0, 2, 3, 1).cpu().numpy()
    )


class VideoWriter:
    """Incremental H.264 writer: ``write(frames (b,3,H,W) in [0,1])`` batch by batch.

    ``crf`` 0 is lossless (yuv444p); higher is smaller. Output is written to a
    temporary name and renamed on :meth:`close`, so a crash never leaves a
    half-written file under the final name.
    """

    def __init__(self, path: str | Path, fps: int = DEFAULT_FPS, *, crf: int = 12,
                 pix_fmt: str = "yuv420p") -> None:
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self.pix_fmt = pix_fmt
        self._tmp = self.path.with_name(f".{self.path.name}.partial.mp4")
        self._container: Any = None
        self._stream: Any = None
        self.n_frames = 0

    def _start(self, height: int, width: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._tmp), mode="w")
        stream = self._container.add_stream("libx264", rate=Fraction(self.fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = self.pix_fmt
        # Deterministic output: single-threaded x264, fixed options.
        stream.options = {"crf": str(self.crf), "preset": "medium", "threads": "1"}
        stream.codec_context.thread_count = 1
        self._stream = stream

    def write(self, frames: torch.Tensor) -> None:
        self.write_uint8(to_uint8(frames))

    def write_uint8(self, frames: Iterable[np.ndarray] | np.ndarray) -> None:
        import av

        for image in frames:
            if self._stream is None:
                self._start(image.shape[0], image.shape[1])
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.n_frames += 1

    def close(self) -> None:
        if self._stream is None:
            raise InputError(self.path, "no frames were written")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._tmp.replace(self.path)
        self._stream = None

    def abort(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, batches: Iterable[torch.Tensor], fps: int = DEFAULT_FPS,
                *, crf: int = 12) -> int:
    """Write all batches of frames to ``path``; returns the number of frames."""
    with VideoWriter(path, fps, crf=crf) as writer:
        for batch in batches:
            writer.write(batch)
    return writer.n_frames
