"""The results store: one SQLite file (default ``./bench-results.db``).

Tables (schema version in ``PRAGMA user_version``, upgraded by :data:`MIGRATIONS`):

* ``cells``: id (hash of the spec), the spec as JSON, its label and status
  (``planned`` until every shard is in and the summary is written, then
  ``finished``), peak memory;
* ``runs``: one row per ``bench run`` invocation: start/end, host, device,
  torch/CUDA versions, git sha, package and plugin versions, status;
* ``shards``: which shards of a cell are complete, with their timings;
* ``clips``: per clip: metric states (``torch.save`` bytes), per-clip values
  (JSON) or the error that stopped it;
* ``summaries``: per cell and metric value: pooled value, bootstrap CI, clip
  and failure counts, direction, backend;
* ``throughput``: per cell and stage: seconds, frames, frames/s.

Every write is one transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``) and the file
is in WAL mode, so concurrent ``bench run`` processes are safe and a killed run
never leaves half of a shard or a summary visible: a shard's clips appear all
at once, a cell becomes ``finished`` in the same transaction as its summary.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd

    from .harness import ShardResult

DEFAULT_STORE = "bench-results.db"

_V1 = """
CREATE TABLE cells (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    spec TEXT NOT NULL,
    dataset TEXT, split TEXT, task TEXT, driver TEXT, renderer TEXT, postproc TEXT,
    seed INTEGER,
    status TEXT NOT NULL DEFAULT 'planned',
    n_shards INTEGER,
    created_at REAL NOT NULL,
    finished_at REAL,
    run_id INTEGER,
    peak_host_bytes INTEGER,
    peak_device_bytes INTEGER
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL, ended_at REAL,
    host TEXT, pid INTEGER, device TEXT, torch_version TEXT, cuda_version TEXT,
    git_sha TEXT, versions TEXT, argv TEXT,
    status TEXT NOT NULL
);
CREATE TABLE shards (
    cell_id TEXT NOT NULL REFERENCES cells(id),
    n_shards INTEGER NOT NULL, shard INTEGER NOT NULL,
    run_id INTEGER, finished_at REAL, device TEXT,
    frames INTEGER, wall_s REAL, io_busy_s REAL, warmup_clips INTEGER,
    stage_seconds TEXT, peak_host_bytes INTEGER, peak_device_bytes INTEGER, metric_info TEXT,
    PRIMARY KEY (cell_id, n_shards, shard)
);
CREATE TABLE clips (
    cell_id TEXT NOT NULL REFERENCES cells(id),
    n_shards INTEGER NOT NULL, shard INTEGER NOT NULL,
    idx INTEGER NOT NULL, uuid TEXT NOT NULL, n_frames INTEGER,
    metric_values TEXT, states BLOB, error TEXT, wall_s REAL, stage_seconds TEXT,
    PRIMARY KEY (cell_id, n_shards, idx)
);
CREATE TABLE summaries (
    cell_id TEXT NOT NULL REFERENCES cells(id),
    metric TEXT NOT NULL, key TEXT NOT NULL,
    value REAL, ci_low REAL, ci_high REAL,
    n_clips INTEGER, n_failed INTEGER, higher_is_better INTEGER, backend TEXT, label TEXT,
    PRIMARY KEY (cell_id, key)
);
CREATE TABLE throughput (
    cell_id TEXT NOT NULL REFERENCES cells(id),
    stage TEXT NOT NULL, seconds REAL, frames INTEGER, fps REAL,
    PRIMARY KEY (cell_id, stage)
);
"""

#: MIGRATIONS[i] upgrades a store from schema version i to i+1.
MIGRATIONS: list[str] = [_V1]
SCHEMA_VERSION = len(MIGRATIONS)


def _dumps_states(states: Mapping[str, Mapping[str, Any]]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({m: {k: v.detach().cpu() for k, v in st.items()} for m, st in states.items()}, buf)
    return buf.getvalue()


def _loads_states(blob: bytes | None) -> dict[str, dict[str, Any]]:
    import torch

    if not blob:
        return {}
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def _directions(metric: Any) -> dict[str, bool | None]:
    """Direction per output key; keys other than the metric's own are diagnostics (None)."""
    if hasattr(metric, "directions"):
        return dict(metric.directions())
    return {getattr(metric, "name", ""): bool(getattr(metric, "higher_is_better", True))}


def _nan_to_none(x: Any) -> Any:
    return None if isinstance(x, float) and (math.isnan(x) or math.isinf(x)) else x


class Store:
    """A connection to the results database (created and migrated on open)."""

    def __init__(self, path: str | Path = DEFAULT_STORE) -> None:
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE takes the write
            # lock up front, so two writers wait on the busy timeout instead of deadlocking).
            self.conn = sqlite3.connect(str(self.path), timeout=120, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=120000")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise InputError(self.path, f"not a readable results store ({exc})",
                             fix="pass another --store path") from exc

    # ------------------------------------------------------------------ basics
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self.transaction() as c:
            version = int(c.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"{self.path} has schema version {version}, newer than this headbench "
                    f"({SCHEMA_VERSION})",
                    fix="upgrade headbench or use another --store",
                )
            for v in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[v]):
                    c.execute(statement)
                c.execute(f"PRAGMA user_version={v + 1}")

    # ------------------------------------------------------------------ runs
    def start_run(self, env: Mapping[str, Any]) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO runs (started_at, host, pid, device, torch_version, cuda_version, "
                "git_sha, versions, argv, status) VALUES (?,?,?,?,?,?,?,?,?, 'running')",
                (time.time(), env.get("host"), os.getpid(), env.get("device"), env.get("torch"),
                 env.get("cuda"), env.get("git_sha"), json.dumps(env.get("versions", {})),
                 json.dumps(list(env.get("argv", [])))),
            )
            return int(cur.lastrowid or 0)

    def end_run(self, run_id: int, status: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE runs SET ended_at=?, status=? WHERE id=?", (time.time(), status, run_id))

    # ------------------------------------------------------------------ cells
    def add_cell(self, cid: str, spec: Mapping[str, Any], label: str) -> None:
        from .harness import canonical_json, chain_label

        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO cells (id, label, spec, dataset, split, task, driver, renderer, "
                "postproc, seed, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (cid, label, canonical_json(spec), spec["dataset"]["name"], spec["split"], spec["task"],
                 spec["driver"]["name"], spec["renderer"]["name"],
                 chain_label([p["name"] for p in spec["postproc"]]), spec["seed"], time.time()),
            )

    def cell_finished(self, cid: str) -> bool:
        row = self.conn.execute("SELECT status FROM cells WHERE id=?", (cid,)).fetchone()
        return bool(row and row[0] == "finished")

    def prepare_cell(self, cid: str, n_shards: int, *, force: bool = False) -> None:
        """Before running: drop a forced cell's results, or leftovers of another sharding."""
        with self.transaction() as c:
            if force:
                for table in ("clips", "shards", "summaries", "throughput"):
                    c.execute(f"DELETE FROM {table} WHERE cell_id=?", (cid,))
                c.execute("UPDATE cells SET status='planned', finished_at=NULL WHERE id=?", (cid,))
            else:
                for table in ("clips", "shards"):
                    c.execute(f"DELETE FROM {table} WHERE cell_id=? AND n_shards<>?", (cid, n_shards))

    def finished_shards(self, cid: str, n_shards: int) -> set[int]:
        rows = self.conn.execute("SELECT shard FROM shards WHERE cell_id=? AND n_shards=?", (cid, n_shards))
        return {int(r[0]) for r in rows}

    def done_clips(self, cid: str, n_shards: int, shard: int) -> set[int]:
        """Indices of clips of a shard already scored by an interrupted earlier run.

        Clips saved with an error are not among them: a resumed cell tries them again
        (the failure may have been transient, e.g. memory), and their rows are replaced.
        """
        rows = self.conn.execute("SELECT idx FROM clips WHERE cell_id=? AND n_shards=? AND shard=? "
                                 "AND error IS NULL", (cid, n_shards, shard))
        return {int(r[0]) for r in rows}

    def write_clip(self, cid: str, n_shards: int, shard: int, clip: Any) -> None:
        """One clip's row (its own transaction). Not visible in results until the cell finishes."""
        with self.transaction() as c:
            self._insert_clip(c, (cid, n_shards, shard), clip)

    @staticmethod
    def _insert_clip(c: sqlite3.Connection, key: tuple[str, int, int], clip: Any) -> None:
        c.execute(
            "INSERT OR REPLACE INTO clips (cell_id, n_shards, shard, idx, uuid, n_frames, metric_values, "
            "states, error, wall_s, stage_seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (*key, clip.index, clip.uuid, clip.n_frames,
             json.dumps({k: _nan_to_none(v) for k, v in clip.values.items()}),
             _dumps_states(clip.states) if clip.error is None else None,
             clip.error, clip.wall, json.dumps(clip.seconds)),
        )

    def write_shard(self, res: ShardResult, run_id: int | None = None) -> None:
        """The clip rows of one shard (those not saved yet) and its completion mark,
        in one transaction."""
        key = (res.cell_id, res.n_shards, res.shard)
        with self.transaction() as c:
            c.execute("DELETE FROM shards WHERE cell_id=? AND n_shards=? AND shard=?", key)
            for clip in res.clips:
                self._insert_clip(c, key, clip)
            c.execute(
                "INSERT INTO shards (cell_id, n_shards, shard, run_id, finished_at, device, frames, "
                "wall_s, io_busy_s, warmup_clips, stage_seconds, peak_host_bytes, peak_device_bytes, "
                "metric_info) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (*key, run_id, time.time(), res.device, res.frames, res.wall, res.io_busy,
                 res.warmup_clips, json.dumps(res.stage_seconds), res.peak_host_bytes,
                 res.peak_device_bytes, json.dumps(res.metric_info)),
            )

    def clip_states(self, cid: str, n_shards: int) -> list[tuple[int, str, dict[str, Any] | None, str | None]]:
        """(index, uuid, states or None, error) for every clip of a cell, by clip index."""
        rows = self.conn.execute(
            "SELECT idx, uuid, states, error FROM clips WHERE cell_id=? AND n_shards=? ORDER BY idx",
            (cid, n_shards),
        ).fetchall()
        return [(int(i), u, (_loads_states(s) if e is None else None), e) for i, u, s, e in rows]

    def finish_cell(self, cid: str, n_shards: int, *, metrics: Mapping[str, Any],
                    n_resamples: int | None = None, seed: int = 0,
                    run_id: int | None = None) -> dict[str, Any]:
        """Merge the shards of a cell into its summary and mark it finished (one transaction).

        Clip states are merged in clip order whatever the sharding, so a cell run in
        any number of shards gives bit-identical pooled values.
        """
        done = self.finished_shards(cid, n_shards)
        missing = sorted(set(range(n_shards)) - done)
        if missing:
            raise ConfigError(f"cell {cid}: shards {missing} of {n_shards} are not finished")
        clips = self.clip_states(cid, n_shards)
        shard_rows = self.conn.execute(
            "SELECT frames, wall_s, io_busy_s, stage_seconds, peak_host_bytes, peak_device_bytes, "
            "metric_info FROM shards WHERE cell_id=? AND n_shards=?", (cid, n_shards)).fetchall()
        info: dict[str, Any] = {}
        for row in shard_rows:
            info.update(json.loads(row[6] or "{}"))
        ok = [st for _, _, st, err in clips if err is None and st is not None]
        n_failed = sum(err is not None for _, _, _, err in clips)
        summary_rows: list[tuple[Any, ...]] = []
        for name, metric in metrics.items():
            states = [metric.restore_state(st[name]) for st in ok if name in st]
            meta = info.get(name, {})
            if not states:
                summary_rows.append((cid, name, name, None, None, None, 0, n_failed,
                                     int(bool(getattr(metric, "higher_is_better", True))),
                                     meta.get("backend", ""), meta.get("label", "")))
                continue
            values = metric.compute_state(metric.merge(states))
            cis = bootstrap_ci_values(metric, states, n_resamples=n_resamples, seed=seed)
            directions = _directions(metric)
            for key, value in values.items():
                low, high = cis.get(key, (None, None))
                direction = directions.get(key)
                summary_rows.append((cid, name, key, _nan_to_none(float(value)), _nan_to_none(low),
                                     _nan_to_none(high), len(states), n_failed,
                                     None if direction is None else int(direction),
                                     meta.get("backend", str(getattr(metric, "backend", ""))),
                                     meta.get("label", "")))
        stage_tot: dict[str, float] = {}
        frames = 0
        wall = 0.0
        io_busy = 0.0
        for row in shard_rows:
            frames += int(row[0] or 0)
            wall += float(row[1] or 0.0)
            io_busy += float(row[2] or 0.0)
            for s, v in json.loads(row[3] or "{}").items():
                stage_tot[s] = stage_tot.get(s, 0.0) + float(v)
        stage_tot["io_background"] = io_busy
        stage_tot["total"] = wall
        peak_host = max((int(r[4] or 0) for r in shard_rows), default=0)
        dev_peaks = [int(r[5]) for r in shard_rows if r[5] is not None]
        with self.transaction() as c:
            c.execute("DELETE FROM summaries WHERE cell_id=?", (cid,))
            c.execute("DELETE FROM throughput WHERE cell_id=?", (cid,))
            c.executemany("INSERT INTO summaries VALUES (?,?,?,?,?,?,?,?,?,?,?)", summary_rows)
            for stage, secs in stage_tot.items():
                fps = frames / secs if secs > 0 else None
                c.execute("INSERT INTO throughput VALUES (?,?,?,?,?)", (cid, stage, secs, frames, fps))
            c.execute(
                "UPDATE cells SET status='finished', n_shards=?, finished_at=?, peak_host_bytes=?, "
                "peak_device_bytes=?, run_id=? WHERE id=?",
                (n_shards, time.time(), peak_host, max(dev_peaks) if dev_peaks else None, run_id, cid),
            )
        return self.summary(cid)

    def summary(self, cid: str) -> dict[str, Any]:
        """A finished cell's metric rows and throughput rows (plain dicts)."""
        cols = ("metric", "key", "value", "ci_low", "ci_high", "n_clips", "n_failed",
                "higher_is_better", "backend", "label")
        rows = self.conn.execute(
            f"SELECT {', '.join(cols)} FROM summaries WHERE cell_id=? ORDER BY rowid", (cid,)).fetchall()
        tp = self.conn.execute(
            "SELECT stage, seconds, frames, fps FROM throughput WHERE cell_id=? ORDER BY rowid",
            (cid,)).fetchall()
        cell = self.conn.execute("SELECT peak_host_bytes, peak_device_bytes, label FROM cells WHERE id=?",
                                 (cid,)).fetchone()
        return {
            "cell_id": cid,
            "label": cell[2] if cell else "",
            "metrics": [dict(zip(cols, r, strict=True)) for r in rows],
            "throughput": [dict(zip(("stage", "seconds", "frames", "fps"), r, strict=True)) for r in tp],
            "peak_host_bytes": cell[0] if cell else None,
            "peak_device_bytes": cell[1] if cell else None,
        }


def bootstrap_ci_values(metric: Any, states: Sequence[Mapping[str, Any]], *,
                        n_resamples: int | None = None, seed: int = 0,
                        level: float = 0.95) -> dict[str, tuple[float | None, float | None]]:
    """Percentile bootstrap CI over clips for every value key of ``metric``.

    ``n_resamples`` None means the metric's ``bootstrap_resamples`` (default 1000;
    FID asks for fewer, each resample costs an eigenproblem); 0 means no CI.
    Resampling is :func:`bench.stats.bootstrap_ci` (clips with replacement, seeded).
    """
    if n_resamples is None:
        n_resamples = int(getattr(metric, "bootstrap_resamples", 1000))
    if n_resamples <= 0 or len(states) < 2:
        return {}
    from .stats import bootstrap_ci

    return _normalise_ci(bootstrap_ci(metric, list(states), n_resamples=n_resamples, seed=seed), metric)


def _normalise_ci(result: Any, metric: Any) -> dict[str, tuple[float | None, float | None]]:
    """Accept the shapes a statistics helper may return: (low, high), an object with
    ``low``/``high``, or a mapping of value key to either."""

    def pair(x: Any) -> tuple[float | None, float | None]:
        if hasattr(x, "low") and hasattr(x, "high"):
            return float(x.low), float(x.high)
        if isinstance(x, Mapping) and "low" in x:
            return float(x["low"]), float(x["high"])
        lo, hi = x[0], x[1]
        return float(lo), float(hi)

    if isinstance(result, Mapping) and not ("low" in result and "high" in result):
        return {str(k): pair(v) for k, v in result.items()}
    return {str(metric.name): pair(result)}


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# ---------------------------------------------------------------------- environment
def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_environment(device: str, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Where and with what a run happens (the ``runs`` row)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    import bench

    versions: dict[str, str] = {"headbench": bench.__version__}
    for pkg in ("torch", "torchvision", "numpy", "av", "torchmetrics", "pytorch-fid", "face-alignment"):
        with contextlib.suppress(PackageNotFoundError):
            versions[pkg] = version(pkg)
    with contextlib.suppress(Exception):
        for entry in bench.available():
            if entry.distribution:
                versions[f"plugin:{entry.plugin}"] = f"{entry.distribution} {entry.dist_version}"
    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "host": socket.gethostname(),
        "device": dev,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "git_sha": _git_sha(),
        "versions": versions,
        "argv": list(argv),
    }


# ---------------------------------------------------------------------- results and export
def results(store: str | Path = DEFAULT_STORE) -> dict[str, pd.DataFrame]:
    """The store as pandas DataFrames.

    Keys: ``cells`` (one row per cell: spec fields, status, peak memory, and one
    column per metric value), ``summaries`` (cell x metric: value, CI, counts),
    ``clips`` (cell x clip: error and one column per per-clip value),
    ``throughput`` (cell x stage), ``runs``.
    """
    import pandas as pd

    path = Path(store)
    if not path.is_file():
        raise InputError(path, "no results store here", fix="run `bench run` first or pass --store")
    with Store(path) as st:
        con = st.conn
        cells = pd.read_sql_query(
            "SELECT id AS cell_id, label, dataset, split, task, driver, renderer, postproc, seed, status, "
            "n_shards, created_at, finished_at, peak_host_bytes, peak_device_bytes, spec FROM cells "
            "ORDER BY created_at, id", con)
        summaries = pd.read_sql_query("SELECT * FROM summaries ORDER BY cell_id, rowid", con)
        clips_raw = pd.read_sql_query(
            "SELECT c.cell_id, c.idx, c.uuid, c.n_frames, c.error, c.wall_s, c.metric_values, c.shard, "
            "c.n_shards FROM clips c JOIN cells ON cells.id=c.cell_id AND cells.n_shards=c.n_shards "
            "WHERE cells.status='finished' ORDER BY c.cell_id, c.idx", con)
        throughput = pd.read_sql_query("SELECT * FROM throughput ORDER BY cell_id, rowid", con)
        runs = pd.read_sql_query("SELECT * FROM runs ORDER BY id", con)
    if not summaries.empty:
        wide = summaries.pivot_table(index="cell_id", columns="key", values="value", aggfunc="first")
        cells = cells.merge(wide, left_on="cell_id", right_index=True, how="left")
    values = pd.DataFrame([json.loads(v or "{}") for v in clips_raw["metric_values"]], index=clips_raw.index)
    clips = pd.concat([clips_raw.drop(columns=["metric_values"]), values], axis=1)
    return {"cells": cells, "summaries": summaries, "clips": clips, "throughput": throughput, "runs": runs}


EXPORT_FORMATS = ("csv", "parquet", "json")


def export(store: str | Path, out: str | Path, fmt: str = "csv") -> list[Path]:
    """Write every results table: ``csv``/``parquet`` one file per table in the folder
    ``out``; ``json`` one file ``{table: [records...]}``. Returns the files written."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}", fix=f"use one of {', '.join(EXPORT_FORMATS)}")
    tables = results(store)
    out = Path(out)
    written: list[Path] = []
    if fmt == "json":
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {name: json.loads(df.to_json(orient="records")) for name, df in tables.items()}
        out.write_text(json.dumps(doc, indent=1))
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        path = out / f"{name}.{fmt}"
        if fmt == "csv":
            df.to_csv(path, index=False)
        else:
            try:
                df.to_parquet(path, index=False)
            except ImportError as exc:
                from .errors import MissingDependencyError

                raise MissingDependencyError("parquet export needs pyarrow", fix="pip install pyarrow") from exc
        written.append(path)
    return written
