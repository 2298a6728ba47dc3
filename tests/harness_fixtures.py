"""Fixtures shared by the harness, store and CLI tests (imported by those test modules)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bench_home: Path) -> Iterator[Path]:
    """The fake plugin loaded (here and in subprocesses); returns a dataset root."""
    import harness_fakes

    import bench.harness

    monkeypatch.setenv("BENCH_PLUGINS", "harness_fakes")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(bench.harness, "_DATASETS", {})
    monkeypatch.setattr(bench.harness, "_METRIC_CACHE", {})
    root = harness_fakes.write_dataset(tmp_path / "ds", harness_fakes.CLIPS)
    yield root
