"""Ablation pages from named grids.

An ablation file is a ``bench run --config`` grid with report metadata: a
title, a description, the label of the reference row, and one labelled cell
per row. Each row's difference to the reference comes from a paired bootstrap
over the clips both cells scored (:func:`bench.stats.paired_comparison`), so a
reader sees which differences are larger than clip-sampling noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomllib

from ..errors import InputError
from .model import CellResult
from .site import Ablation, AblationRow, Paired

ABLATION_DIR = Path("reports") / "ablations"


def default_ablation_files() -> list[Path]:
    return sorted(ABLATION_DIR.glob("*.toml")) if ABLATION_DIR.is_dir() else []


def read_ablation_grids(path: Path) -> list[dict[str, Any]]:
    """Grids of ``path`` that carry report metadata (``reference`` and labelled ``cells``)."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(path, f"cannot read ablation grid ({exc})") from exc
    grids = []
    for name, grid in doc.get("grids", {}).items():
        if "reference" not in grid:
            continue
        cells = grid.get("cells", [])
        labels = [c.get("label") for c in cells]
        if not cells or any(not lab for lab in labels):
            raise InputError(path, f"grid {name!r}: every cell needs a 'label'")
        if grid["reference"] not in labels:
            raise InputError(path, f"grid {name!r}: reference {grid['reference']!r} is not a cell label "
                             f"(labels: {', '.join(labels)})")
        grids.append({"slug": name, **grid})
    return grids


def _match(grid: dict[str, Any], row: dict[str, Any], cells: Sequence[CellResult]) -> CellResult | None:
    want = {k: str(row.get(k, grid.get(k, default))) for k, default in
            (("split", "test"), ("task", "talking"), ("driver", ""), ("renderer", "rig"),
             ("postproc", "none"))}
    dataset = row.get("dataset", grid.get("dataset"))
    found = [c for c in cells
             if (dataset is None or c.dataset == dataset)
             and all(getattr(c, k) == v for k, v in want.items())]
    return found[-1] if found else None  # the most recent such cell


def build_ablations(files: Sequence[Path], cells: Sequence[CellResult], store: Path) -> list[Ablation]:
    from ..stats import paired_comparison
    from .results import load_clip_states

    ablations = []
    for path in files:
        for grid in read_ablation_grids(Path(path)):
            matched = {row["label"]: _match(grid, row, cells) for row in grid["cells"]}
            reference = matched[grid["reference"]]
            ref_states = load_clip_states(store, reference.cell_id) if reference else {}
            rows = []
            for row in grid["cells"]:
                cell = matched[row["label"]]
                paired: dict[str, Paired] = {}
                if cell is not None and reference is not None and cell is not reference:
                    paired = _paired(cell, reference, load_clip_states(store, cell.cell_id),
                                     ref_states, paired_comparison)
                rows.append(AblationRow(row["label"], cell, paired))
            ablations.append(Ablation(slug=grid["slug"], title=grid.get("title", grid["slug"]),
                                      description=grid.get("description", ""),
                                      reference=grid["reference"], rows=rows))
    return ablations


def _paired(cell: CellResult, reference: CellResult, states: dict[str, dict[str, Any]],
            ref_states: dict[str, dict[str, Any]], paired_comparison: Any) -> dict[str, Paired]:
    import bench

    common = [u for u in ref_states if u in states]
    result: dict[str, Paired] = {}
    if not common:
        return result
    for name in cell.metrics:
        if name not in reference.metrics:
            continue
        a = [states[u][name] for u in common if name in states[u] and name in ref_states[u]]
        b = [ref_states[u][name] for u in common if name in states[u] and name in ref_states[u]]
        if not a:
            continue
        metric = bench.load("metric", name)
        a, b = [metric.restore_state(x) for x in a], [metric.restore_state(x) for x in b]
        comparison = paired_comparison(metric, a, b)
        if name in comparison:
            p = comparison[name]
            result[name] = Paired(float(p.delta), float(p.low), float(p.high), bool(p.significant))
    return result
