"""pytest plugin: the regression gate as a fixture, for teams that gate in pytest.

Registered through the ``pytest11`` entry point, so it is active wherever
headbench is installed::

    def test_quality_holds(bench_gate):
        bench_gate(store="bench-results.db", baseline="reports/baseline.json",
                   tolerances=["psnr=0.1"])

The fixture fails the test with the gate's Markdown table when a metric
regresses or baseline data is missing. ``--bench-store`` and
``--bench-baseline`` set the defaults from the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bench", "headbench regression gate")
    group.addoption("--bench-store", default="bench-results.db", help="results store for bench_gate")
    group.addoption("--bench-baseline", default="reports/baseline.json", help="baseline for bench_gate")


@pytest.fixture
def bench_gate(request: pytest.FixtureRequest) -> Callable[..., object]:
    """Call it to gate: ``bench_gate(store=..., baseline=..., tolerances=[...], cell=..., require_ci=...)``."""

    def check(store: str | Path | None = None, baseline: str | Path | None = None, *,
              tolerances: Sequence[str] = (), cell: str | None = None, require_ci: bool = False,
              throughput_ratio: float | None = 0.5) -> object:
        from bench.gate import evaluate, parse_tolerances, read_baseline, to_markdown
        from bench.report.results import load_cells

        store = store or request.config.getoption("--bench-store")
        baseline = baseline or request.config.getoption("--bench-baseline")
        result = evaluate(load_cells(store), read_baseline(baseline), parse_tolerances(tolerances),
                          cell_filter=cell, require_ci=require_ci, throughput_ratio=throughput_ratio)
        if result.exit_code:
            pytest.fail(to_markdown(result), pytrace=False)
        return result

    return check
