"""Gate decisions: direction, tolerances, CI option, throughput, outputs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bench.errors import ConfigError
from bench.gate import (
    Tolerance,
    baseline_from_cells,
    evaluate,
    parse_tolerances,
    to_junit,
    to_markdown,
)
from bench.report.model import CellResult, MetricValue


def _cell(psnr: float, fid: float, fps: float = 20.0, ci: tuple[float, float] | None = None,
          driver: str = "lstm") -> CellResult:
    low, high = ci or (None, None)
    return CellResult(
        cell_id="x", dataset="vico-mini", split="test", task="talking", driver=driver,
        renderer="rig", postproc="none", fps=fps,
        metrics={"psnr": MetricValue(psnr, True, low, high), "fid": MetricValue(fid, False)},
    )


BASE = baseline_from_cells([_cell(20.0, 30.0)])
TOL = parse_tolerances([])


def test_unchanged_passes_and_direction_matters() -> None:
    assert evaluate([_cell(20.0, 30.0)], BASE, TOL).exit_code == 0
    # psnr higher is better: a rise is an improvement, a drop beyond 0.05 fails
    assert evaluate([_cell(21.0, 30.0)], BASE, TOL).exit_code == 0
    drop = evaluate([_cell(19.9, 30.0)], BASE, TOL)
    assert drop.exit_code == 1 and [r.metric for r in drop.regressions] == ["psnr"]
    # fid lower is better: 2% default -> 30.5 passes, 31 fails
    assert evaluate([_cell(20.0, 30.5)], BASE, TOL).exit_code == 0
    rise = evaluate([_cell(20.0, 31.0)], BASE, TOL)
    assert [r.metric for r in rise.regressions] == ["fid"]
    assert rise.regressions[0].cell == "vico-mini/test/talking/lstm/rig/none"


def test_tolerances_parse_and_override() -> None:
    assert Tolerance.parse("2%") == Tolerance(0.02, True)
    assert Tolerance.parse("0.1") == Tolerance(0.1, False)
    loose = parse_tolerances(["psnr=0.5"])
    assert evaluate([_cell(19.6, 30.0)], BASE, loose).exit_code == 0
    with pytest.raises(ConfigError):
        parse_tolerances(["psnr"])
    with pytest.raises(ConfigError):
        Tolerance.parse("abc")


def test_require_ci_passes_noise_only() -> None:
    noisy = _cell(19.9, 30.0, ci=(19.5, 20.3))
    assert evaluate([noisy], BASE, TOL).exit_code == 1
    assert evaluate([noisy], BASE, TOL, require_ci=True).exit_code == 0
    clear = _cell(19.0, 30.0, ci=(18.8, 19.2))
    assert evaluate([clear], BASE, TOL, require_ci=True).exit_code == 1


def test_throughput_ratio_and_missing_cells() -> None:
    assert evaluate([_cell(20.0, 30.0, fps=11.0)], BASE, TOL).exit_code == 0
    slow = evaluate([_cell(20.0, 30.0, fps=9.0)], BASE, TOL)
    assert [r.metric for r in slow.regressions] == ["fps"]
    missing = evaluate([_cell(20.0, 30.0, driver="other")], BASE, TOL)
    assert missing.exit_code == 2 and {r.metric for r in missing.missing} == {"psnr", "fid", "fps"}
    assert evaluate([], BASE, TOL, cell_filter="nothing-matches").exit_code == 2


def test_outputs_are_well_formed() -> None:
    result = evaluate([_cell(19.0, 30.0)], BASE, TOL)
    suite = ET.fromstring(to_junit(result))
    assert suite.get("failures") == "1" and suite.get("tests") == "3"
    assert suite.find("testcase[@name='psnr']/failure") is not None
    assert "FAIL: regression" in to_markdown(result)
