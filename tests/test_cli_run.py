"""`bench run` and `bench export` end to end (in-process CLI with the fake plugin)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench
from bench.cli import main
from bench.cli_run import load_grids, parse_component_options
from bench.errors import ConfigError

pytest_plugins = ("harness_fixtures",)

REPO = Path(__file__).resolve().parents[1]


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_run_prints_metrics_stores_and_skips_second_time(fakes: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.db"
    argv = ["run", "--dataset", f"fake-ds:{fakes}", "--driver", "gt,static", "--renderer", "fake-rig",
            "--postproc", "none,fake-blend", "--metrics", "fake-psnr,fake-l1", "--store", str(db),
            "--batch-size", "4", "--bootstrap", "20", "--limit", "3"]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert out.count("fake-psnr ↑") == 4 and out.count("fake-l1 ↓") == 4
    assert out.count("metrics.fake-psnr") == 4  # per-metric time in the throughput table
    assert "95% CI" in out and "frames/s" in out
    cells = bench.results(str(db))["cells"]
    assert len(cells) == 4 and (cells["status"] == "finished").all()
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") >= 4
    assert len(bench.results(str(db))["runs"]) == 1


def test_run_errors_exit_2_with_fix(fakes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["run", "--dataset", f"fake-ds:{fakes}", "--renderer", "fake-rig", "--metrics", "fake-psnr",
            "--store", str(tmp_path / "r.db")]
    assert _run([*base, "--driver", "statc"]) == 2
    assert "Did you mean: static" in capsys.readouterr().err
    assert _run([*base, "--driver", "gt", "--postproc", "fake-warp"]) == 2
    assert "warp_mode" in capsys.readouterr().err
    assert _run(base) == 2
    assert "--driver" in capsys.readouterr().err
    assert not (tmp_path / "r.db").exists()  # validation happens before any work


def test_config_grids_and_export(fakes: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "grid.toml"
    cfg.write_text(f"""
[grids.product]
dataset = "fake-ds:{fakes}"
driver = ["gt", "static"]
renderer = "fake-rig"
postproc = "none,fake-blend"
metrics = ["fake-psnr"]
limit = 2
[grids.product.options.postproc.fake-blend]
alpha = 0.5

[grids.explicit]
dataset = "fake-ds:{fakes}"
metrics = "fake-psnr"
limit = 2
cells = [{{ driver = "fake-noisy", renderer = "fake-rig", postproc = "fake-blend+fake-dim" }}]
""")
    db = tmp_path / "r.db"
    assert _run(["run", "--config", str(cfg), "--store", str(db), "--bootstrap", "0", "-q"]) == 0
    cells = bench.results(str(db))["cells"]
    assert sorted(cells["label"]) == sorted([
        "gt | fake-rig | none", "gt | fake-rig | fake-blend", "static | fake-rig | none",
        "static | fake-rig | fake-blend", "fake-noisy | fake-rig | fake-blend+fake-dim"])
    spec = json.loads(cells.set_index("label").loc["gt | fake-rig | fake-blend", "spec"])
    assert spec["postproc"][0]["options"] == {"alpha": 0.5}
    assert _run(["export", "--format", "json", "--store", str(db), "--out", str(tmp_path / "r.json")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert len(doc["cells"]) == 5 and len(doc["clips"]) == 10


def test_component_options_parse() -> None:
    assert parse_component_options(["lmd.backend=dlib", "fid.batch=64", "x.flag=true"], "metric") == {
        "lmd": {"backend": "dlib"}, "fid": {"batch": 64}, "x": {"flag": True}}
    with pytest.raises(ConfigError):
        parse_component_options(["backend=dlib"], "metric")


def test_shipped_grids_parse() -> None:
    for path in (REPO / "reports" / "grids").glob("*.toml"):
        grids = load_grids(path)
        assert grids
        for _, g in grids:
            assert g.get("cells") or g.get("driver")
