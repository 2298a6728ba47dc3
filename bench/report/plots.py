"""SVG plots for reports, made with matplotlib and inlined in the pages.

Text is drawn as paths (matplotlib's default ``svg.fonttype``), so plugin
names inside plots cannot inject markup, and the SVG needs no web fonts.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from .model import CellResult


def _svg(fig: object) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype for inlining


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "headbench", "font.size": 9})
    return plt


def pareto_chart(cells: Sequence[CellResult], metric: str) -> str | None:
    """Quality (``metric``) against throughput, Pareto-optimal cells joined by a line."""
    points = [(c.fps, c.metrics[metric].value, c.method) for c in cells
              if c.fps and metric in c.metrics]
    if len(points) < 1:
        return None
    higher = next(c.metrics[metric].higher_is_better for c in cells if metric in c.metrics)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    xs, ys, _ = zip(*points, strict=True)
    ax.scatter(xs, ys, color="#3b6fd6", zorder=3)
    for x, y, name in points:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    frontier: list[tuple[float, float]] = []
    for x, y, _ in sorted(points, key=lambda p: -p[0]):
        if not frontier or (y > frontier[-1][1] if higher else y < frontier[-1][1]):
            frontier.append((x, y))
    if len(frontier) > 1:
        fx, fy = zip(*sorted(frontier), strict=True)
        ax.plot(fx, fy, color="#d0542c", lw=1, zorder=2, label="Pareto front")
        ax.legend(loc="best", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end frames/s (log)")
    ax.set_ylabel(f"{metric} ({'higher' if higher else 'lower'} is better)")
    ax.set_title(f"quality vs throughput: {metric}")
    ax.grid(alpha=0.3)
    return _svg(fig)


def clip_distributions(values: Mapping[str, Sequence[float]], metric: str) -> str | None:
    """Per-clip values of one metric, a box per cell (method label -> values)."""
    data = {k: [v for v in vs if v == v] for k, vs in values.items() if vs}
    if not data:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(3.0, 0.9 * len(data) + 1.5), 3.2))
    ax.boxplot(list(data.values()), showfliers=True)
    ax.set_xticks(range(1, len(data) + 1), list(data.keys()), rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(f"per-clip {metric}")
    ax.grid(alpha=0.3, axis="y")
    return _svg(fig)
