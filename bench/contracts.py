"""The contracts between the harness and its components.

These are the shapes the harness relies on; plugins implement them (structural
typing: no base class is required). Conventions at every boundary:

* frames: ``float32 (B,3,H,W)`` RGB in ``[0,1]`` on the run's device;
* coefficients: ``float32 (T,73)`` or ``(B,T,73)`` in *driver order*
  (angle 3 | exp 64 | trans 3 | crop 3, see :mod:`bench.coeffs`), denormalised;
* audio features: ``float32 (T,F)``, the official ViCo features (F=45 at 44.1 kHz).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

Task = Literal["talking", "listening"]
TASKS: tuple[Task, ...] = ("talking", "listening")
ROLE_OF_TASK: dict[str, str] = {"talking": "speaker", "listening": "listener"}


@runtime_checkable
class Sample(Protocol):
    """One clip to generate: everything is loaded lazily, frames are streamed."""

    uuid: str
    task: Task
    role: str  # the generated role: "speaker" (talking) or "listener" (listening)
    n_frames: int
    fps: float
    attitude: str | None

    def audio_features(self) -> torch.Tensor:
        """(T,F) float32 official audio features of the clip's wav (not normalised)."""
        ...

    def reference_image(self) -> torch.Tensor:
        """(3,H,W) float32 in [0,1]: the first frame of the generated role."""
        ...

    def gt_frames(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Ground-truth frames of the generated role, (b,3,H,W) float32 in [0,1]."""
        ...

    def gt_coeffs(self) -> torch.Tensor | None:
        """(T,73) ground-truth coefficients of the generated role, driver order, or None."""
        ...

    def speaker_coeffs(self) -> torch.Tensor | None:
        """(T,73) the speaker's coefficients (listening samples), driver order, or None."""
        ...


@dataclass(frozen=True)
class NormStats:
    """Per-dimension mean/std (unbiased) of driver coefficients and audio features."""

    coeff_mean: torch.Tensor  # (73,)
    coeff_std: torch.Tensor  # (73,)
    audio_mean: torch.Tensor  # (F,)
    audio_std: torch.Tensor  # (F,)


@runtime_checkable
class Dataset(Protocol):
    name: str
    root: Path

    def splits(self) -> list[str]: ...

    def samples(self, split: str, task: Task) -> Sequence[Sample]: ...

    def content_hash(self) -> str:
        """Hash of the dataset's files (part of every cell id)."""
        ...

    def norm_stats(self) -> NormStats: ...


@dataclass
class DriverBatch:
    """Inputs of one driver call. B clips of equal length T."""

    audio: torch.Tensor  # (B,T,F) raw official audio features
    init: torch.Tensor  # (B,73) first-frame coefficients of the generated role, driver order
    speaker: torch.Tensor | None = None  # (B,T,73) speaker coefficients (listening)
    attitude: Sequence[str | None] = ()
    gt: torch.Tensor | None = None  # (B,T,73) ground truth; only the `gt` driver reads it
    uuids: Sequence[str] = ()


@runtime_checkable
class Driver(Protocol):
    tasks: frozenset[str]
    model: Any  # torch.nn.Module or None

    def predict(self, batch: DriverBatch) -> torch.Tensor:
        """(B,T,73) coefficients in driver order, denormalised."""
        ...


@runtime_checkable
class Renderer(Protocol):
    #: render options this renderer accepts (post-processors may request them)
    render_options: frozenset[str]

    def render(
        self,
        source: torch.Tensor,
        coeffs: torch.Tensor,
        *,
        source_coeffs: torch.Tensor | None = None,
    ) -> Iterator[torch.Tensor]:
        """Stream frames for one clip.

        Args:
            source: (3,H,W) reference image in [0,1].
            coeffs: (T,73) driver-order coefficients to render.
            source_coeffs: (73,) coefficients of the reference image, if known.

        Yields:
            (b,3,H,W) frames in [0,1], in order, b <= the renderer's batch size.
        """
        ...


@runtime_checkable
class PostProcessor(Protocol):
    #: options this post-processor needs the renderer to be built with
    renderer_options: Mapping[str, Any]

    def start_clip(self, reference: torch.Tensor) -> None:
        """Reset per-clip state; ``reference`` is (3,H,W) in [0,1]."""
        ...

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        """(b,3,H,W) in [0,1] -> same shape; called batch by batch, in order."""
        ...


@dataclass
class WorkItem:
    """A unit of work for an executor: one cell, or one shard of its clips."""

    cell_id: str
    shard: int = 0
    n_shards: int = 1
    payload: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Executor(Protocol):
    def map(self, fn: Any, items: Sequence[WorkItem]) -> list[Any]:
        """Run ``fn(item)`` for every item (maybe elsewhere); results in order."""
        ...
