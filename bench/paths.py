"""Where headbench keeps caches, weights, checkpoints and generated datasets.

Everything lives under ``$BENCH_HOME`` (default ``~/.cache/bench``) so a user can
move or wipe it in one place; caches are keyed by content hashes, never by names.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def bench_home() -> Path:
    """Root of all headbench state: ``$BENCH_HOME`` or ``~/.cache/bench``."""
    root = os.environ.get("BENCH_HOME")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "bench"


def cache_dir(*parts: str) -> Path:
    """A cache folder below ``$BENCH_HOME/cache``, created on demand."""
    path = bench_home().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_dir(*parts: str) -> Path:
    """Where weights files are looked up: ``$BENCH_HOME/weights/...`` (not created)."""
    return bench_home().joinpath("weights", *parts)


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
