"""Small, fully deterministic components for the harness tests, as a bench plugin.

Loaded with ``BENCH_PLUGINS=harness_fakes`` (the tests folder on ``PYTHONPATH``),
so subprocesses, submitit jobs and Ray workers see them too.

* dataset ``fake-ds:ROOT``: clips described by ``ROOT/manifest.json``; GT
  coefficients are a smooth deterministic function of the clip seed, GT frames
  are :func:`draw` of them plus a fixed pattern (so even the ``gt`` driver is
  not perfect);
* renderer ``fake-rig``: :func:`draw` of the coefficients, in batches;
* post-processors ``fake-blend`` (asks the renderer for ``padding_mode``) and
  ``fake-warp`` (asks for an option no renderer has);
* metrics ``fake-psnr`` (pooled, sum state), ``fake-l1`` (clip level, coeffs),
  ``fake-means`` (cat state), ``fake-packed`` (stored in another form than its state);
* drivers ``fake-noisy`` (gt + torch.randn noise: seeds matter) and ``fake-nan``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.contracts import DriverBatch, NormStats
from bench.hookspecs import hookimpl
from bench.metric import Metric
from bench.registry import ComponentSpec, WeightsStatus

H = W = 16
F = 8


def draw(coeffs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(T,73) coefficients -> (T,3,H,W) frames in [0,1] (a smooth, exact function)."""
    t = coeffs.shape[0]
    ys = torch.linspace(-1, 1, reference.shape[1])[:, None]
    xs = torch.linspace(-1, 1, reference.shape[2])[None, :]
    c = coeffs.float()
    field = (c[:, 0, None, None] * xs + c[:, 1, None, None] * ys + c[:, 3, None, None])  # (T,H,W)
    rgb = torch.sigmoid(field[:, None] + c[:, 4:7, None, None])
    return (0.5 * rgb + 0.5 * reference[None]).clamp(0, 1).reshape(t, 3, reference.shape[1], reference.shape[2])


def gt_from_drawn(frames: torch.Tensor) -> torch.Tensor:
    """Ground truth = drawn frames dimmed, plus a fixed pattern (b,3,h,w)."""
    h, w = frames.shape[-2:]
    pattern = (torch.arange(h * w).reshape(1, 1, h, w) % 7).float() / 70.0
    return (frames * 0.9 + pattern).clamp(0, 1)


def write_dataset(root: Path, clips: list[dict[str, Any]], name: str = "fake") -> Path:
    """``clips``: dicts with uuid, n_frames, seed and optionally ``corrupt`` (frame index)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({"name": name, "test": clips, "train": clips[:1]}))
    return root


@dataclass
class FakeSample:
    uuid: str
    task: str
    role: str
    n_frames: int
    fps: float
    attitude: str | None
    seed: int
    corrupt: int | None = None
    size: int = H

    def _gen(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def audio_features(self) -> torch.Tensor:
        return torch.randn(self.n_frames, F, generator=self._gen())

    def reference_image(self) -> torch.Tensor:
        g = self._gen()
        return torch.rand(3, self.size, self.size, generator=g) * 0.6 + 0.2

    def gt_coeffs(self) -> torch.Tensor:
        t = torch.arange(self.n_frames, dtype=torch.float32)[:, None]
        phase = torch.arange(73, dtype=torch.float32)[None] * 0.37 + self.seed
        return torch.sin(t * 0.05 + phase) * 0.8

    def speaker_coeffs(self) -> torch.Tensor:
        return self.gt_coeffs().flip(0)

    def gt_frames(self, batch_size: int) -> Iterator[torch.Tensor]:
        coeffs, ref = self.gt_coeffs(), self.reference_image()
        for start in range(0, self.n_frames, batch_size):
            if self.corrupt is not None and start + batch_size > self.corrupt:
                raise ValueError(f"{self.uuid}: corrupt frame {self.corrupt}")
            yield gt_from_drawn(draw(coeffs[start:start + batch_size], ref))


class FakeDataset:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._manifest = json.loads((self.root / "manifest.json").read_text())
        self.name = self._manifest["name"]

    def splits(self) -> list[str]:
        return [k for k in self._manifest if k != "name"]

    def samples(self, split: str, task: str) -> list[FakeSample]:
        role = "speaker" if task == "talking" else "listener"
        return [FakeSample(c["uuid"], task, role, c["n_frames"], 30.0, None, c["seed"], c.get("corrupt"),
                           c.get("size", H))
                for c in self._manifest[split]]

    def content_hash(self) -> str:
        return hashlib.sha256((self.root / "manifest.json").read_bytes()).hexdigest()

    def norm_stats(self) -> NormStats:
        return NormStats(torch.zeros(73), torch.ones(73), torch.zeros(F), torch.ones(F))


class FakeRenderer:
    render_options = frozenset({"padding_mode", "delay"})

    def __init__(self, batch_size: int = 5, padding_mode: str = "zeros", delay: float = 0.0,
                 weights: str | None = None, device: str = "cpu", precision: str = "fp32") -> None:
        self.batch_size = batch_size
        self.padding_mode = padding_mode
        self.delay = delay
        self.model = None

    def render(self, source: torch.Tensor, coeffs: torch.Tensor, *,
               source_coeffs: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
        for start in range(0, coeffs.shape[0], self.batch_size):
            if self.delay:
                time.sleep(self.delay)
            yield draw(coeffs[start:start + self.batch_size], source)


class FakeBlend:
    renderer_options: Mapping[str, Any] = {"padding_mode": "border"}

    def __init__(self, alpha: float = 0.25) -> None:
        self.alpha = alpha
        self.ref: torch.Tensor | None = None

    def start_clip(self, reference: torch.Tensor) -> None:
        self.ref = reference

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        assert self.ref is not None
        return (1 - self.alpha) * frames + self.alpha * self.ref[None]


class FakeDim(FakeBlend):
    renderer_options: Mapping[str, Any] = {}

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        return frames * 0.9


class FakeWarp(FakeBlend):
    renderer_options: Mapping[str, Any] = {"warp_mode": "exotic"}


class NoisyDriver:
    tasks = frozenset({"talking", "listening"})
    model = None

    def __init__(self, scale: float = 0.3) -> None:
        self.scale = scale

    def predict(self, batch: DriverBatch) -> torch.Tensor:
        assert batch.gt is not None
        return batch.gt + self.scale * torch.randn(batch.gt.shape)


class NanDriver:
    """NaN coefficients for clips whose uuid starts with 'bad'."""

    tasks = frozenset({"talking", "listening"})
    model = None

    def predict(self, batch: DriverBatch) -> torch.Tensor:
        assert batch.gt is not None
        out = batch.gt.clone()
        if batch.uuids[0].startswith("bad"):
            out[:, 3] = float("nan")
        return out


class FakePSNR(Metric):
    name = "fake-psnr"
    inputs = frozenset({"frames", "gt_frames"})

    def __init__(self) -> None:
        super().__init__()
        self.add_state("sse", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), "sum")
        self.keys_seen: list[str] = []

    def update(self, frames: torch.Tensor, gt_frames: torch.Tensor, gt_key: str = "") -> None:  # type: ignore[override]
        self.keys_seen.append(gt_key)
        self._state["sse"] = self._state["sse"] + ((frames.double() - gt_frames.double()) ** 2).sum()
        self._state["n"] = self._state["n"] + frames.numel()

    def _compute(self, state: Mapping[str, torch.Tensor]) -> float:
        return -10.0 * math.log10(float(state["sse"] / state["n"]) + 1e-8)


class FakeL1(Metric):
    name = "fake-l1"
    higher_is_better = False
    inputs = frozenset({"coeffs", "gt_coeffs"})
    frame_level = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("abs", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, coeffs: torch.Tensor, gt_coeffs: torch.Tensor) -> None:  # type: ignore[override]
        self._state["abs"] = self._state["abs"] + (coeffs.double() - gt_coeffs.double()).abs().sum()
        self._state["n"] = self._state["n"] + coeffs.numel()

    def _compute(self, state: Mapping[str, torch.Tensor]) -> float:
        return float(state["abs"] / state["n"])


class FakeMeans(Metric):
    """Mean brightness of generated frames, per frame (a 'cat' state)."""

    name = "fake-means"
    inputs = frozenset({"frames"})

    def __init__(self) -> None:
        super().__init__()
        self.add_state("means", torch.zeros(0, dtype=torch.float64), "cat")

    def update(self, frames: torch.Tensor) -> None:  # type: ignore[override]
        self._state["means"] = torch.cat([self._state["means"], frames.double().mean(dim=(1, 2, 3))])

    def _compute(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        # a second, diagnostic output key (no direction)
        return {"fake-means": float(state["means"].mean()), "fake-means_frames": float(state["means"].numel())}


class FakePacked(Metric):
    """Mean brightness whose stored form differs from its state (as FID's does):
    every consumer of stored clip states must restore them before merging."""

    name = "fake-packed"
    inputs = frozenset({"frames"})

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), "sum")

    def update(self, frames: torch.Tensor) -> None:  # type: ignore[override]
        self._state["total"] = self._state["total"] + frames.double().mean(dim=(1, 2, 3)).sum()
        self._state["n"] = self._state["n"] + frames.shape[0]

    def stored_state(self) -> dict[str, torch.Tensor]:
        state = self.state()
        return {"n": state["n"], "halved": state["total"] / 2}

    def restore_state(self, stored: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"n": stored["n"], "total": stored["halved"] * 2}

    def _compute(self, state: Mapping[str, torch.Tensor]) -> float:
        return float(state["total"] / state["n"])


CLIPS: list[dict[str, Any]] = [
    {"uuid": "a1", "n_frames": 13, "seed": 1},
    {"uuid": "b2", "n_frames": 20, "seed": 2},
    {"uuid": "c3", "n_frames": 9, "seed": 3},
    {"uuid": "d4", "n_frames": 17, "seed": 4},
    {"uuid": "e5", "n_frames": 11, "seed": 5},
]

METRICS = ["fake-psnr", "fake-l1", "fake-means"]



def plan_args(root: Path, **over: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "dataset": f"fake-ds:{root}",
        "drivers": ["gt"],
        "renderers": ["fake-rig"],
        "postprocs": ["none"],
        "metrics": METRICS,
        "batch_size": 4,
    }
    args.update(over)
    return args


_M = "harness_fakes"


@hookimpl
def bench_add_datasets() -> dict[str, ComponentSpec]:
    return {"fake-ds": ComponentSpec(f"{_M}:FakeDataset", positional="root")}


def fake_weights_status() -> WeightsStatus:
    """Default weights of ``fake-rig-w``: the file named by $FAKE_RIG_WEIGHTS."""
    where = os.environ.get("FAKE_RIG_WEIGHTS", "/nonexistent")
    return WeightsStatus(Path(where).is_file(), where, "set FAKE_RIG_WEIGHTS")


@hookimpl
def bench_add_renderers() -> dict[str, ComponentSpec]:
    return {
        "fake-rig": ComponentSpec(f"{_M}:FakeRenderer", version="1"),
        "fake-rig-w": ComponentSpec(f"{_M}:FakeRenderer", weights=f"{_M}:fake_weights_status"),
    }


@hookimpl
def bench_add_postprocessors() -> dict[str, ComponentSpec]:
    return {"fake-blend": ComponentSpec(f"{_M}:FakeBlend"), "fake-warp": ComponentSpec(f"{_M}:FakeWarp"),
            "fake-dim": ComponentSpec(f"{_M}:FakeDim")}


@hookimpl
def bench_add_drivers() -> dict[str, ComponentSpec]:
    return {
        "fake-noisy": ComponentSpec(f"{_M}:NoisyDriver"),
        "fake-nan": ComponentSpec(f"{_M}:NanDriver"),
        "fake-talk-only": ComponentSpec(f"{_M}:NanDriver", tasks=("talking",)),
    }


@hookimpl
def bench_add_metrics() -> dict[str, ComponentSpec]:
    return {
        "fake-psnr": ComponentSpec(f"{_M}:FakePSNR"),
        "fake-l1": ComponentSpec(f"{_M}:FakeL1"),
        "fake-means": ComponentSpec(f"{_M}:FakeMeans"),
        "fake-packed": ComponentSpec(f"{_M}:FakePacked"),
    }
