"""Fixtures shared by the harness, store and CLI tests (imported by those test modules)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent

CLIPS: list[dict[str, Any]] = [
    {"uuid": "a1", "n_frames": 13, "seed": 1},
    {"uuid": "b2", "n_frames": 20, "seed": 2},
    {"uuid": "c3", "n_frames": 9, "seed": 3},
    {"uuid": "d4", "n_frames": 17, "seed": 4},
    {"uuid": "e5", "n_frames": 11, "seed": 5},
]

METRICS = ["fake-psnr", "fake-l1", "fake-means"]


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bench_home: Path) -> Iterator[Path]:
    """The fake plugin loaded (here and in subprocesses); returns a dataset root."""
    import harness_fakes

    import bench.harness

    monkeypatch.setenv("BENCH_PLUGINS", "harness_fakes")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(bench.harness, "_DATASETS", {})
    monkeypatch.setattr(bench.harness, "_METRIC_CACHE", {})
    root = harness_fakes.write_dataset(tmp_path / "ds", CLIPS)
    yield root


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
