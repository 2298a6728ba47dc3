"""Render a self-contained static site: leaderboards, ablations, plots, strips.

Pages are jinja2 templates shipped in the package with autoescaping on, so
every plugin-provided name or string renders as text. CSS, the sort script,
plots (SVG) and sample strips (PNG data URIs) are inlined: the site needs no
network to view.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model import CellResult
from .plots import clip_distributions, pareto_chart
from .ranking import best_cells, metric_names, rank_2022, rank_2023


@dataclass(frozen=True)
class Paired:
    """A paired comparison of one metric between a row and the reference row."""

    delta: float
    low: float
    high: float
    significant: bool


@dataclass
class AblationRow:
    label: str
    cell: CellResult | None
    paired: dict[str, Paired] = field(default_factory=dict)


@dataclass
class Ablation:
    slug: str
    title: str
    description: str
    reference: str
    rows: list[AblationRow]


@dataclass(frozen=True)
class Strip:
    caption: str
    png_base64: str


@dataclass
class SiteData:
    cells: list[CellResult]
    clip_values: Mapping[str, Mapping[str, Sequence[float]]] = field(default_factory=dict)
    ablations: list[Ablation] = field(default_factory=list)
    strips: Mapping[tuple[str, str, str], list[Strip]] = field(default_factory=dict)
    provenance: list[tuple[str, str]] = field(default_factory=list)


def _env() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,  # plugin names are untrusted text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.3f}"
    return f"{value:.4f}"


def _anchor(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def _board_rows(cells: list[CellResult], clip_values: Mapping[str, Mapping[str, Sequence[float]]]
                ) -> dict[str, Any]:
    names = metric_names(cells)
    best = {n: best_cells(cells, n) for n in names}
    r22, r23 = rank_2022(cells), rank_2023(cells)
    rows = []
    for cell in sorted(cells, key=lambda c: (r23[c.cell_id], c.method)):
        values = []
        for n in names:
            m = cell.metrics[n]
            ci = f"[{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]" if m.ci_low is not None else ""
            values.append({"text": _fmt(m.value), "ci": ci, "best": cell.cell_id in best[n],
                           "sort": m.value})
        rows.append({
            "method": cell.method, "cols": values, "rank2022": r22[cell.cell_id],
            "rank2023": r23[cell.cell_id], "fps": "–" if not cell.fps else f"{cell.fps:.1f}", "fps_sort": cell.fps or 0,
            "device": cell.device or "", "n_clips": cell.n_clips, "failures": cell.failures,
        })
    metrics = []
    for n in names:
        sample = cells[0].metrics[n]
        title = " ".join(x for x in (sample.backend and f"backend={sample.backend}", sample.label) if x)
        metrics.append({"name": n, "higher_is_better": sample.higher_is_better, "title": title})
    plots = []
    if names:
        chart = pareto_chart(cells, names[0])
        if chart:
            plots.append(chart)
    for n in names:
        per_cell = {c.method: clip_values.get(c.cell_id, {}).get(n, []) for c in cells}
        chart = clip_distributions(per_cell, n)
        if chart:
            plots.append(chart)
    return {"metrics": metrics, "rows": rows, "plots": plots}


def _ablation_context(ab: Ablation) -> dict[str, Any]:
    present = [r.cell for r in ab.rows if r.cell is not None]
    names = metric_names(present)
    rows = []
    for row in ab.rows:
        if row.cell is None:
            continue
        values = []
        for n in names:
            m = row.cell.metrics[n]
            p = row.paired.get(n)
            if row.label == ab.reference or p is None:
                values.append({"text": _fmt(m.value), "sort": m.value, "delta": "ref" if row.label == ab.reference else "–",
                               "delta_ci": "", "delta_class": "", "delta_sort": 0})
            else:
                values.append({
                    "text": _fmt(m.value), "sort": m.value, "delta": f"{p.delta:+.4g}",
                    "delta_ci": f"[{p.low:+.4g}, {p.high:+.4g}]",
                    "delta_class": "sig" if p.significant else "nosig", "delta_sort": p.delta,
                })
        rows.append({"label": row.label, "method": row.cell.method, "cols": values})
    metrics = [{"name": n, "higher_is_better": present[0].metrics[n].higher_is_better} for n in names]
    missing = [r.label for r in ab.rows if r.cell is None]
    return {"title": ab.title, "description": ab.description, "reference": ab.reference,
            "metrics": metrics, "rows": rows, "missing": missing}


def build_site(data: SiteData, out: str | Path) -> list[Path]:
    """Write the site into ``out``; returns the pages written (index first)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = _env()
    nav = [{"href": f"ablation-{ab.slug}.html", "title": f"Ablation: {ab.title}"} for ab in data.ablations]
    common = {"nav": nav, "provenance": data.provenance}

    boards: dict[tuple[str, str, str], list[CellResult]] = {}
    for cell in data.cells:
        boards.setdefault(cell.board, []).append(cell)
    board_ctx = []
    for key in sorted(boards):
        ctx = _board_rows(boards[key], data.clip_values)
        ctx.update(dataset=key[0], split=key[1], task=key[2], anchor=_anchor(*key),
                   strips=[{"caption": s.caption, "png": s.png_base64} for s in data.strips.get(key, [])])
        board_ctx.append(ctx)

    pages = []
    index = out / "index.html"
    index.write_text(env.get_template("leaderboard.html.j2").render(
        title="Leaderboards", boards=board_ctx, **common), encoding="utf-8")
    pages.append(index)
    for ab in data.ablations:
        page = out / f"ablation-{ab.slug}.html"
        page.write_text(env.get_template("ablation.html.j2").render(**_ablation_context(ab), **common),
                        encoding="utf-8")
        pages.append(page)
    return pages
