"""Shared fixtures: an isolated $BENCH_HOME, the shared golden data, a fresh plugin session."""

from __future__ import annotations

import os

# On a busy 2-core machine libgomp's spin-waiting threads stall each other (FID's
# InceptionV3 ran 6x slower); passive waiting must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Compiling networks ahead of time (bench.accel) costs 30-60 s per network and cache;
# tests that exercise compilation ask for it explicitly (compile="on").
os.environ.setdefault("BENCH_COMPILE", "off")

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"


@pytest.fixture(autouse=True)
def _fresh_plugin_session(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from default plugin discovery (tests may reconfigure)."""
    import bench.plugins

    monkeypatch.delenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("BENCH_PLUGINS", raising=False)
    monkeypatch.setattr(bench.plugins, "_session", None)
    yield


@pytest.fixture
def bench_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $BENCH_HOME for tests that write caches."""
    home = tmp_path / "bench_home"
    monkeypatch.setenv("BENCH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def golden() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"golden data not found at {GOLDEN} (../shared must sit beside the repo)")
    return GOLDEN


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test (small models: fastest, and reproducible)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
