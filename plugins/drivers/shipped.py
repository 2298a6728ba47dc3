"""Checkpoints shipped as package data (``plugins/drivers/checkpoints/``); no torch import.

``manifest.json`` maps each driver name to its checkpoint files (ensemble members
best first) and records the command that trained them (their test numbers are in
the folder's README.md).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from bench.errors import MissingDependencyError
from bench.registry import WeightsStatus

SHIPPED_PACKAGE = "bench_plugins.drivers"
SHIPPED_FOLDER = "checkpoints"


def shipped_root() -> Path:
    return Path(str(resources.files(SHIPPED_PACKAGE).joinpath(SHIPPED_FOLDER)))


def shipped_manifest() -> dict[str, Any]:
    path = shipped_root() / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_checkpoints(name: str) -> list[Path]:
    """Checkpoint files shipped for the named driver (members best first)."""
    entry = shipped_manifest().get("drivers", {}).get(name)
    paths = [shipped_root() / f for f in entry["files"]] if entry else []
    if not paths or not all(p.is_file() for p in paths):
        raise MissingDependencyError(
            f"no shipped checkpoint for driver {name!r} in {shipped_root()}",
            fix=f"train one with `bench train --driver {name} --dataset vico-mini` and pass "
            "checkpoint=PATH (or checkpoints=... for ensembles)",
        )
    return paths


def shipped_status(name: str) -> WeightsStatus:
    try:
        paths = shipped_checkpoints(name)
    except MissingDependencyError as exc:
        return WeightsStatus(False, str(shipped_root()), exc.fix or "")
    return WeightsStatus(True, ", ".join(p.name for p in paths))


def _status(name: str) -> Any:
    def check() -> WeightsStatus:
        return shipped_status(name)

    check.__name__ = f"status_{name.replace('-', '_')}"
    return check


status_lstm = _status("lstm")
status_lstm_nobn = _status("lstm-nobn")
status_lstm_nores = _status("lstm-nores")
status_lstm_nodrop = _status("lstm-nodrop")
status_lstm_self3 = _status("lstm-self3")
status_lstm_ens5 = _status("lstm-ens5")
status_vico_speaker = _status("vico-speaker")
status_vico_listener = _status("vico-listener")
status_listener_ens3 = _status("listener-ens3")
