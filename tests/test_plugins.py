"""The plugin system: discovery, provenance, errors, enabling and disabling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

import bench
from bench.errors import DuplicateComponentError, PluginError, UnknownComponentError
from bench.hookspecs import hookimpl
from bench.plugins import build_registry, create_manager
from bench.registry import ComponentSpec

TOY = Path(__file__).parent / "toy_plugin"


def test_builtins_register_through_entry_points() -> None:
    names = {e.name: e for e in bench.available("driver")}
    assert {"static", "gt"} <= set(names)
    assert names["static"].plugin == "drivers"
    assert names["static"].distribution == "headbench"


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownComponentError) as info:
        bench.load("driver", "statik")
    message = str(info.value)
    assert "Did you mean: static" in message
    assert "Available:" in message and "gt" in message


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(bench.BenchError, match="Did you mean 'driver'"):
        bench.load("drivers", "static")


def test_duplicate_names_name_both_plugins() -> None:
    class Twin:
        @hookimpl
        def bench_add_drivers(self) -> dict[str, ComponentSpec]:
            return {"static": ComponentSpec("x:y")}

    pm = create_manager()
    pm.register(Twin(), name="twin")
    with pytest.raises(DuplicateComponentError) as info:
        build_registry(pm)
    assert "'drivers'" in str(info.value) and "'twin'" in str(info.value)


def test_misspelled_hook_fails_loudly() -> None:
    class Typo:
        @hookimpl
        def bench_add_driverz(self) -> dict[str, str]:
            return {}

    module = type(sys)("typo_plugin")
    module.bench_add_driverz = Typo().bench_add_driverz  # type: ignore[attr-defined]
    sys.modules["typo_plugin"] = module
    try:
        with pytest.raises(PluginError, match="bench_add_driverz"):
            create_manager(["typo_plugin"])
    finally:
        del sys.modules["typo_plugin"]


def test_disable_builtin_plugin() -> None:
    bench.configure(["no:drivers"])
    assert bench.available("driver") == []
    with pytest.raises(UnknownComponentError, match=r"\(none: is a plugin disabled\?\)"):
        bench.load("driver", "static")


def test_autoload_off_then_explicit_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    bench.configure([])
    assert bench.available() == []
    bench.configure(["drivers"])
    loaded = bench.available()
    assert {"gt", "static"} <= {e.name for e in loaded}
    assert {e.plugin for e in loaded} == {"drivers"}


def test_listing_imports_no_torch() -> None:
    code = (
        "import sys, json, bench; from bench.cli import main\n"
        "entries = bench.available(); assert entries\n"
        "print(json.dumps('torch' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip()) is False


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy plugin distribution, really installed (pip) into its own site folder."""
    target = tmp_path_factory.mktemp("toy_site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(TOY)],
        check=True,
    )
    assert list(target.glob("bench_toy-*.dist-info"))
    return target


def _bench(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=environ
    )


def test_third_party_plugin_is_discovered_and_loadable(toy_site: Path) -> None:
    listing = _bench(["list"], toy_site)
    assert listing.returncode == 0, listing.stderr
    assert "toy-zero" in listing.stdout and "bench-toy" in listing.stdout
    assert "toy-mae" in listing.stdout

    code = (
        "import bench, torch\n"
        "from bench.contracts import DriverBatch\n"
        "d = bench.load('driver', 'toy-zero')\n"
        "out = d.predict(DriverBatch(audio=torch.ones(2, 5, 45), init=torch.ones(2, 73)))\n"
        "m = bench.load('metric', 'toy-mae')\n"
        "m.update(frames=torch.ones(1,3,4,4), gt_frames=torch.zeros(1,3,4,4))\n"
        "print(tuple(out.shape), m.compute())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(toy_site)},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "(2, 5, 73) {'toy-mae': 1.0}"


def test_third_party_plugin_can_be_disabled(toy_site: Path) -> None:
    listing = _bench(["-p", "no:toy", "list", "driver"], toy_site)
    assert listing.returncode == 0, listing.stderr
    assert "toy-zero" not in listing.stdout and "static" in listing.stdout


def test_autoload_disabled_loads_only_named_plugins(toy_site: Path) -> None:
    listing = _bench(["-p", "toy", "list"], toy_site, BENCH_DISABLE_PLUGIN_AUTOLOAD="1")
    assert listing.returncode == 0, listing.stderr
    assert "toy-zero" in listing.stdout and "static" not in listing.stdout


def test_cli_error_exit_code_and_message(toy_site: Path) -> None:
    bad = _bench(["-p", "no-such-plugin-xyz", "list"], toy_site)
    assert bad.returncode == 2
    assert "no-such-plugin-xyz" in bad.stderr


def test_metric_directions_rank_only_the_main_key() -> None:
    from bench.metric import Metric

    class Counted(Metric):
        name = "counted"
        higher_is_better = False
        extra_directions: ClassVar[dict[str, bool | None]] = {"counted_paired": True}

    assert Counted().directions() == {"counted": False, "counted_paired": True}
    assert bench.load("metric", "lmd").directions() == {"lmd": False}


def test_lstm_ens6_suggests_lstm_ens5() -> None:
    with pytest.raises(UnknownComponentError, match=r"Did you mean: lstm-ens5"):
        bench.load("driver", "lstm-ens6")
