"""`bench report` and `bench gate` end to end on a real results store (fake plugin cells)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.cli import main

pytest_plugins = ("harness_fixtures",)


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _cell(fakes: Path, db: Path, *extra: str) -> list[str]:
    return ["run", "--dataset", f"fake-ds:{fakes}", "--renderer", "fake-rig", "--metrics",
            "fake-psnr,fake-l1", "--store", str(db), "--batch-size", "4", "--bootstrap", "50",
            "--limit", "4", "--quiet", *extra]


def test_planted_regression_fails_the_gate(fakes: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    base_db, baseline = tmp_path / "base.db", tmp_path / "baseline.json"
    assert _run(_cell(fakes, base_db, "--driver", "fake-noisy")) == 0
    assert _run(["gate", "--store", str(base_db), "--baseline", str(baseline), "--update-baseline"]) == 0
    doc = json.loads(baseline.read_text())
    assert list(doc["cells"]) == [next(iter(doc["cells"]))] and "fake-psnr" in next(iter(doc["cells"].values()))["metrics"]

    # unchanged rerun in a fresh store: same numbers, exit 0
    again = tmp_path / "again.db"
    assert _run(_cell(fakes, again, "--driver", "fake-noisy")) == 0
    capsys.readouterr()
    assert _run(["gate", "--store", str(again), "--baseline", str(baseline), "--throughput-ratio", "0"]) == 0
    assert "PASS" in capsys.readouterr().out

    # the planted regression: same driver (same cell label), three times the noise
    worse = tmp_path / "worse.db"
    assert _run(_cell(fakes, worse, "--driver", "fake-noisy", "--driver-opt", "fake-noisy.scale=0.9")) == 0
    capsys.readouterr()
    junit, md = tmp_path / "gate.xml", tmp_path / "gate.md"
    code = _run(["gate", "--store", str(worse), "--baseline", str(baseline), "--throughput-ratio", "0",
                 "--junit", str(junit), "--markdown", str(md)])
    out = capsys.readouterr().out
    assert code == 1
    assert "regression" in out and "fake-psnr" in out and "fake-noisy" in out
    failures = ET.fromstring(junit.read_text()).findall("testcase/failure")
    assert {f.get("message") for f in failures} >= {"fake-psnr regressed"}
    assert "FAIL: regression" in md.read_text()


def test_gate_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["gate", "--store", str(tmp_path / "none.db"), "--baseline", str(tmp_path / "b.json")]) == 2
    assert "no results store" in capsys.readouterr().err


def test_report_from_a_store_with_an_ablation(fakes: Path, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    grid = tmp_path / "ablation.toml"
    grid.write_text(f'''
[grids.noise]
title = "Noise ablation"
description = "more noise should hurt"
dataset = "fake-ds:{fakes}"
renderer = "fake-rig"
metrics = "fake-psnr,fake-l1"
reference = "clean"
cells = [
    {{ label = "clean", driver = "gt" }},
    {{ label = "noisy", driver = "fake-noisy" }},
]
''')
    assert _run(["run", "--config", str(grid), "--store", str(db), "--batch-size", "4", "--quiet",
                 "--bootstrap", "50"]) == 0
    out = tmp_path / "site"
    assert _run(["report", "--store", str(db), "--out", str(out), "--ablation", str(grid)]) == 0
    index = (out / "index.html").read_text()
    assert index.count("<tr>") >= 3 and "fake-noisy / fake-rig" in index
    page = (out / "ablation-noise.html").read_text()
    assert "Noise ablation" in page and "noisy" in page
    # gt vs noisy on fake-psnr is a large, consistent drop: the paired CI excludes zero
    assert 'class="sig"' in page
