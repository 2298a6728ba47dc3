"""Read the results store into report objects (:class:`CellResult`).

This is the only place that knows the store's tables; reports, gates and the
pytest plugin go through it. Only finished cells are read; the ranked value of
each metric is its main key (the metric's name), other keys are diagnostics.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from ..errors import InputError
from .model import CellResult, MetricValue


def _connect(store: str | Path) -> sqlite3.Connection:
    path = Path(store)
    if not path.is_file():
        raise InputError(path, "no results store here", fix="run `bench run` first, or pass --store PATH")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"cells", "summaries", "throughput"} <= tables:
        conn.close()
        raise InputError(path, "not a headbench results store (tables missing)")
    return conn


def load_cells(store: str | Path) -> list[CellResult]:
    """Every finished cell with its ranked metrics, throughput, device and provenance."""
    with closing(_connect(store)) as conn:
        rows = conn.execute(
            "SELECT c.id, c.dataset, c.split, c.task, c.driver, c.renderer, c.postproc, c.spec, "
            "c.seed, c.peak_host_bytes, r.device, r.torch_version, r.cuda_version, r.git_sha, "
            "r.versions, r.host FROM cells c LEFT JOIN runs r ON r.id = c.run_id "
            "WHERE c.status = 'finished' ORDER BY c.created_at, c.id").fetchall()
        cells = []
        for (cid, dataset, split, task, driver, renderer, postproc, spec_json, seed, peak_host,
             device, torch_v, cuda_v, git_sha, versions, host) in rows:
            cell = CellResult(cell_id=cid, dataset=dataset or "", split=split or "", task=task or "",
                              driver=driver or "", renderer=renderer or "",
                              postproc=postproc or "none", device=device)
            for metric, key, value, low, high, n_clips, n_failed, hib, backend, label in conn.execute(
                    "SELECT metric, key, value, ci_low, ci_high, n_clips, n_failed, higher_is_better, "
                    "backend, label FROM summaries WHERE cell_id=? ORDER BY rowid", (cid,)):
                cell.n_clips = max(cell.n_clips, int(n_clips or 0))
                cell.failures = max(cell.failures, int(n_failed or 0))
                if key != metric or value is None or hib is None:
                    continue  # diagnostics and empty metrics are not ranked
                cell.metrics[key] = MetricValue(float(value), bool(hib), low, high,
                                                backend or "", label or "")
            total = conn.execute("SELECT fps FROM throughput WHERE cell_id=? AND stage='total'",
                                 (cid,)).fetchone()
            cell.fps = float(total[0]) if total and total[0] else None
            spec = json.loads(spec_json or "{}")
            cell.provenance = {
                "cell id": cid, "seed": seed, "device": device, "host": host, "torch": torch_v,
                "cuda": cuda_v, "git sha": git_sha, "peak host memory (MiB)":
                    None if peak_host is None else round(peak_host / 2**20, 1),
                "spec": spec, "versions": json.loads(versions or "{}"),
            }
            cells.append(cell)
    return cells


def load_clip_values(store: str | Path, cell_ids: Sequence[str] | None = None
                     ) -> dict[str, dict[str, list[float]]]:
    """Per-clip values: cell id -> metric key -> values in clip order (failed clips left out)."""
    result: dict[str, dict[str, list[float]]] = {}
    with closing(_connect(store)) as conn:
        rows = conn.execute(
            "SELECT k.cell_id, k.metric_values FROM clips k JOIN cells c ON c.id = k.cell_id "
            "AND c.n_shards = k.n_shards WHERE c.status='finished' AND k.error IS NULL "
            "ORDER BY k.cell_id, k.idx").fetchall()
    wanted = None if cell_ids is None else set(cell_ids)
    for cid, values in rows:
        if wanted is not None and cid not in wanted:
            continue
        per_metric = result.setdefault(cid, {})
        for key, value in json.loads(values or "{}").items():
            if isinstance(value, (int, float)):
                per_metric.setdefault(key, []).append(float(value))
    return result


def load_clip_states(store: str | Path, cell_id: str) -> dict[str, dict[str, Any]]:
    """uuid -> metric name -> state (for paired comparisons over the same clips)."""
    from ..store import Store

    with Store(Path(store)) as st:
        row = st.conn.execute("SELECT n_shards FROM cells WHERE id=?", (cell_id,)).fetchone()
        if row is None:
            raise InputError(Path(store), f"no cell {cell_id!r} in the store")
        return {uuid: states for _, uuid, states, error in st.clip_states(cell_id, int(row[0] or 1))
                if error is None and states is not None}


def provenance_lines(cells: Sequence[CellResult], extra: Mapping[str, Any] | None = None
                     ) -> list[tuple[str, str]]:
    """Provenance shown on every page: versions, devices, seeds, weights, backends, data."""
    import bench

    lines: list[tuple[str, str]] = [("headbench", bench.__version__)]
    for key, value in (extra or {}).items():
        lines.append((key, str(value)))
    seen: dict[str, set[str]] = {}
    for cell in cells:
        p = cell.provenance
        spec = p.get("spec", {})
        for key in ("device", "torch", "cuda", "git sha", "seed"):
            if p.get(key) not in (None, ""):
                seen.setdefault(key, set()).add(str(p[key]))
        for key in ("dataset_hash", "weights", "metrics", "versions"):
            if key in spec:
                seen.setdefault(key, set()).add(json.dumps(spec[key], sort_keys=True))
        for name, version in p.get("versions", {}).items():
            seen.setdefault(f"package {name}", set()).add(str(version))
    for key in sorted(seen):
        lines.append((key, "; ".join(sorted(seen[key]))))
    return lines
