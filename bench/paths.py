"""Where headbench keeps caches, weights, checkpoints and generated datasets.

Everything lives under ``$BENCH_HOME`` (default ``~/.cache/bench``) so a user can
move or wipe it in one place; caches are keyed by content hashes, never by names.
"""

from __future__ import annotations

import hashlib
import json
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


_SHA_MEMO: dict[str, str] = {}


def memoised_file_sha256(path: str | Path) -> str:
    """:func:`file_sha256`, memoised per (path, size, mtime) in this process and in
    ``$BENCH_HOME/cache/file-sha256.json``, so large weights files are read once."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    if key not in _SHA_MEMO:
        memo_path = cache_dir() / "file-sha256.json"
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        if key not in memo:
            memo[key] = file_sha256(p)
            tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")  # atomic against parallel shards
            tmp.write_text(json.dumps(memo))
            tmp.replace(memo_path)
        _SHA_MEMO[key] = memo[key]
    return _SHA_MEMO[key]
