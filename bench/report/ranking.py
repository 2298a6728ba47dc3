"""Challenge-style rankings of cells on one board.

* 2022 rule: a method's score is the number of metrics on which it is best
  (ties count for every tied method); more is better.
* 2023 rule: the sum over metrics of the method's rank on that metric
  (1 = best, ties share the best rank of their group); less is better.
"""

from __future__ import annotations

from collections.abc import Sequence

from .model import CellResult


def metric_names(cells: Sequence[CellResult]) -> list[str]:
    """Metrics present in every cell of the board, in first-seen order."""
    if not cells:
        return []
    names = list(cells[0].metrics)
    return [n for n in names if all(n in c.metrics for c in cells)]


def per_metric_ranks(cells: Sequence[CellResult], name: str) -> list[int]:
    """Competition ranks ("1224") of each cell on one metric, respecting direction."""
    direction = cells[0].metrics[name].higher_is_better
    keyed = [(-c.metrics[name].value if direction else c.metrics[name].value) for c in cells]
    return [1 + sum(other < mine for other in keyed) for mine in keyed]


def best_cells(cells: Sequence[CellResult], name: str) -> set[str]:
    ranks = per_metric_ranks(cells, name)
    return {c.cell_id for c, r in zip(cells, ranks, strict=True) if r == 1}


def rank_2022(cells: Sequence[CellResult]) -> dict[str, int]:
    """Number of metrics each cell is best on."""
    wins = {c.cell_id: 0 for c in cells}
    for name in metric_names(cells):
        for cell_id in best_cells(cells, name):
            wins[cell_id] += 1
    return wins


def rank_2023(cells: Sequence[CellResult]) -> dict[str, int]:
    """Sum of per-metric ranks of each cell (lower is better)."""
    total = {c.cell_id: 0 for c in cells}
    for name in metric_names(cells):
        for cell, rank in zip(cells, per_metric_ranks(cells, name), strict=True):
            total[cell.cell_id] += rank
    return total
