"""Challenge ranking rules on a hand-worked board."""

from __future__ import annotations

from bench.report.model import CellResult, MetricValue
from bench.report.ranking import best_cells, per_metric_ranks, rank_2022, rank_2023


def _cell(cid: str, psnr: float, fid: float) -> CellResult:
    return CellResult(
        cell_id=cid, dataset="d", split="test", task="talking", driver=cid, renderer="r",
        postproc="none",
        metrics={"psnr": MetricValue(psnr, True), "fid": MetricValue(fid, False)},
    )


def test_ranks_respect_direction_and_ties() -> None:
    cells = [_cell("a", 20.0, 30.0), _cell("b", 22.0, 30.0), _cell("c", 22.0, 10.0)]
    # psnr: higher better -> b and c tie first, a third
    assert per_metric_ranks(cells, "psnr") == [3, 1, 1]
    # fid: lower better -> c first, a and b tie second
    assert per_metric_ranks(cells, "fid") == [2, 2, 1]
    assert best_cells(cells, "psnr") == {"b", "c"}
    assert rank_2022(cells) == {"a": 0, "b": 1, "c": 2}
    assert rank_2023(cells) == {"a": 5, "b": 3, "c": 2}
