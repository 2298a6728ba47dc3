"""The ``videos`` renderer: frames of an external method, read from a folder.

``--renderer videos:DIR`` streams ``DIR/{uuid}.{role}.mp4`` for each clip instead
of rendering coefficients, so a method that only ships videos can go through the
post-processors and metrics of ``bench run`` (``--postproc fusion``...). The
harness passes the clip's sample (``render(..., sample=...)``) for the uuid/role.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch


class VideosRenderer:
    """Streams pre-generated frames, (b,3,H,W) float32 in [0,1] on the source's device.

    Args:
        root: folder of ``{uuid}.{role}.mp4`` (or a ViCo-style root with ``videos/``).
        batch_size: frames per yielded batch.
        decoder: ``opencv`` (as the official evaluation) or ``pyav``.
    """

    render_options: frozenset[str] = frozenset()
    version = "1"

    def __init__(self, root: str | Path, batch_size: int = 16, decoder: str = "opencv") -> None:
        from bench.evaluate import DECODERS

        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise InputError(self.root, "videos folder not found", fix="pass --renderer videos:DIR with an existing DIR")
        if (self.root / "videos").is_dir():
            self.root = self.root / "videos"
        if decoder not in DECODERS:
            raise ConfigError(f"unknown decoder {decoder!r}", fix=f"use one of {', '.join(DECODERS)}")
        self.batch_size = int(batch_size)
        self.decoder = decoder

    @staticmethod
    def spec_content(name: str, options: dict[str, Any]) -> str:
        """Content hash of the folder's videos (part of the cell spec: new files, new cell)."""
        from bench.evaluate import _folder_hash
        from bench.registry import split_name

        root = options.get("root") or split_name(name)[1]
        if not root or not Path(root).expanduser().is_dir():
            raise InputError(root, "videos folder not found", fix="pass --renderer videos:DIR with an existing DIR")
        folder = Path(root).expanduser()
        folder = folder / "videos" if (folder / "videos").is_dir() else folder
        return _folder_hash(sorted(folder.glob("*.mp4")))

    def path_for(self, uuid: str, role: str) -> Path:
        return self.root / f"{uuid}.{role}.mp4"

    def render(
        self,
        source: torch.Tensor,
        coeffs: torch.Tensor,
        *,
        source_coeffs: torch.Tensor | None = None,
        sample: Any = None,
    ) -> Iterator[torch.Tensor]:
        """Frames of ``{sample.uuid}.{sample.role}.mp4``; ``coeffs`` only fixes the length (T)."""
        from bench.evaluate import read_frames

        if sample is None:
            raise ConfigError("the videos renderer needs the clip (render(..., sample=...))",
                              fix="run it through `bench run`, which passes the sample")
        path = self.path_for(sample.uuid, sample.role)
        if not path.is_file():
            raise InputError(path, f"no video for clip {sample.uuid} ({sample.role})")
        produced = 0
        for frames in read_frames(path, self.batch_size, self.decoder):
            if frames.shape[-2:] != source.shape[-2:]:
                raise InputError(path, f"frame size {tuple(frames.shape[-2:])}, the reference is "
                                       f"{tuple(source.shape[-2:])}")
            produced += int(frames.shape[0])
            yield frames.to(source.device)
        if produced != int(coeffs.shape[0]):
            raise InputError(path, f"{produced} frames, the clip has {int(coeffs.shape[0])}")
