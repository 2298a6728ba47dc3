"""A small in-memory dataset following the Dataset/Sample contract, for driver tests.

Talking: coefficients are a fixed linear function of the (smoothed, random) audio
features plus a per-clip offset, so a driver can learn them and a static one cannot.
Listening: the listener's coefficients follow the speaker's with a one-frame lag.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.contracts import NormStats, Task


@dataclass
class FakeSample:
    uuid: str
    task: Task
    role: str
    n_frames: int
    fps: float
    attitude: str | None
    audio: torch.Tensor
    coeffs: torch.Tensor
    speaker: torch.Tensor | None

    def audio_features(self) -> torch.Tensor:
        return self.audio.clone()

    def reference_image(self) -> torch.Tensor:
        return torch.zeros(3, 8, 8)

    def gt_frames(self, batch_size: int) -> Iterator[torch.Tensor]:
        yield torch.zeros(self.n_frames, 3, 8, 8)

    def gt_coeffs(self) -> torch.Tensor | None:
        return self.coeffs.clone()

    def speaker_coeffs(self) -> torch.Tensor | None:
        return None if self.speaker is None else self.speaker.clone()


def _smooth(x: torch.Tensor, k: int = 5) -> torch.Tensor:
    kernel = torch.ones(1, 1, k) / k
    y = torch.nn.functional.conv1d(x.T[:, None, :], kernel, padding=k // 2)[:, 0, :]
    return y.T.contiguous()


class FakeDataset:
    """``splits`` train/val/test; clip lengths vary; 45-dim audio by default."""

    name = "fake"
    root = Path("/nonexistent/fake")

    def __init__(
        self, n_clips: Sequence[int] = (12, 3, 3), length: int = 60, audio_dim: int = 45, seed: int = 0
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        # A low-rank map, so a few clips pin it down.
        self.mix = torch.randn(audio_dim, 3, generator=g) @ torch.randn(3, 73, generator=g) * 0.2
        self.scale = torch.rand(73, generator=g) * 2 + 0.5
        self.offset = torch.randn(73, generator=g) * 3
        attitudes = ("positive", "neutral", "negative", None)
        self._samples: dict[tuple[str, str], list[FakeSample]] = {}
        for split, count in zip(("train", "val", "test"), n_clips, strict=True):
            for task in ("talking", "listening"):
                rows = []
                for i in range(count):
                    steps = length + 7 * (i % 3)
                    audio = _smooth(torch.randn(steps, audio_dim, generator=g)) * 2 + 1
                    base = torch.randn(73, generator=g)
                    speaker = base + audio @ self.mix
                    coeffs = speaker * self.scale + self.offset
                    lagged = None
                    if task == "listening":
                        lagged = coeffs
                        coeffs = torch.cat([coeffs[:1], coeffs[:-1]]) * 0.5 + torch.randn(73, generator=g)
                    rows.append(
                        FakeSample(
                            uuid=f"{split}{i:02d}",
                            task=task,
                            role="speaker" if task == "talking" else "listener",
                            n_frames=steps,
                            fps=30.0,
                            attitude=attitudes[i % 4],
                            audio=audio.float(),
                            coeffs=coeffs.float(),
                            speaker=None if lagged is None else lagged.float(),
                        )
                    )
                self._samples[(split, task)] = rows

    def splits(self) -> list[str]:
        return ["train", "val", "test"]

    def samples(self, split: str, task: Task) -> list[FakeSample]:
        return self._samples[(split, task)]

    def content_hash(self) -> str:
        return "fake-" + str(int(self.offset.abs().sum() * 1000))

    def norm_stats(self) -> NormStats:
        rows = self._samples[("train", "talking")] + self._samples[("train", "listening")]
        coeffs = torch.cat([r.coeffs for r in rows] + [r.speaker for r in rows if r.speaker is not None])
        audio = torch.cat([r.audio for r in self._samples[("train", "talking")]])
        return NormStats(coeffs.mean(0), coeffs.std(0), audio.mean(0), audio.std(0))
