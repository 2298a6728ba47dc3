"""Regression gates: compare current results with a committed baseline.

Direction-aware: a higher-is-better metric may not drop by more than its
tolerance, a lower-is-better one may not rise. Tolerances are absolute
(``psnr=0.1``) or relative (``fid=2%``). Throughput is compared as a ratio with
its own, looser tolerance, because timings are noisy across machines.

With ``require_ci`` a quality regression only fails when the current cell's
bootstrap CI also excludes the baseline value, so noise alone cannot fail CI.

Cells are matched by their label (dataset/split/task/driver/renderer/postproc),
not by cell id, so a version bump that changes ids still gates against the
same baseline rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .errors import ConfigError, InputError
from .report.model import CellResult

BASELINE_VERSION = 1

#: Defaults: about one codec/decoder wobble for image metrics, 2% for feature metrics.
DEFAULT_TOLERANCES: dict[str, str] = {
    "psnr": "0.05",
    "ssim": "0.002",
    "cpbd": "0.01",
    "csim": "0.01",
    "fid": "2%",
    "lmd": "2%",
    "lmd-full": "2%",
    "expfd": "2%",
    "anglefd": "2%",
    "transfd": "2%",
}
FALLBACK_TOLERANCE = "1%"
#: current fps may not fall below this fraction of the baseline's
DEFAULT_THROUGHPUT_RATIO = 0.5

PASS, REGRESSION, IMPROVED, MISSING = "pass", "regression", "improved", "missing"


@dataclass(frozen=True)
class Tolerance:
    amount: float
    relative: bool

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        raw = text.strip()
        try:
            if raw.endswith("%"):
                return cls(float(raw[:-1]) / 100.0, True)
            return cls(float(raw), False)
        except ValueError as exc:
            raise ConfigError(
                f"bad tolerance {text!r}", fix="write an absolute number (0.1) or a percentage (2%)"
            ) from exc

    def allowed(self, baseline: float) -> float:
        return abs(baseline) * self.amount if self.relative else self.amount

    def __str__(self) -> str:
        return f"{self.amount * 100:g}%" if self.relative else f"{self.amount:g}"


def parse_tolerances(items: Iterable[str]) -> dict[str, Tolerance]:
    """``["psnr=0.1", "fid=2%"]`` -> tolerances, over the defaults."""
    result = {k: Tolerance.parse(v) for k, v in DEFAULT_TOLERANCES.items()}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"bad --tolerance {item!r}", fix="use NAME=VALUE, e.g. psnr=0.1 or fid=2%")
        result[name.strip()] = Tolerance.parse(value)
    return result


@dataclass(frozen=True)
class GateRow:
    cell: str
    metric: str
    baseline: float | None
    current: float | None
    allowed: str
    status: str
    note: str = ""

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


@dataclass
class GateResult:
    rows: list[GateRow]

    @property
    def regressions(self) -> list[GateRow]:
        return [r for r in self.rows if r.status == REGRESSION]

    @property
    def missing(self) -> list[GateRow]:
        return [r for r in self.rows if r.status == MISSING]

    @property
    def exit_code(self) -> int:
        if self.regressions:
            return 1
        return 2 if self.missing else 0


def baseline_from_cells(cells: Sequence[CellResult]) -> dict[str, Any]:
    """The baseline document for ``--update-baseline`` (reviewed like code)."""
    doc: dict[str, Any] = {
        "version": BASELINE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cells": {},
    }
    for cell in sorted(cells, key=lambda c: c.label):
        doc["cells"][cell.label] = {
            "cell_id": cell.cell_id,
            "metrics": {
                name: {"value": m.value, "higher_is_better": m.higher_is_better,
                       "ci": [m.ci_low, m.ci_high]}
                for name, m in cell.metrics.items()
            },
            "fps": cell.fps,
            "device": cell.device,
        }
    return doc


def read_baseline(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "baseline file not found",
                         fix="create it with `bench gate --update-baseline --baseline PATH`")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"baseline is not valid JSON ({exc})") from exc
    if doc.get("version") != BASELINE_VERSION or not isinstance(doc.get("cells"), dict):
        raise InputError(path, f"not a headbench baseline (version {BASELINE_VERSION} with 'cells')")
    return doc


def evaluate(
    cells: Sequence[CellResult],
    baseline: Mapping[str, Any],
    tolerances: Mapping[str, Tolerance],
    *,
    cell_filter: str | None = None,
    require_ci: bool = False,
    throughput_ratio: float | None = DEFAULT_THROUGHPUT_RATIO,
) -> GateResult:
    """Compare every baseline cell (matching ``cell_filter``) with the current results."""
    current = {c.label: c for c in cells}
    rows: list[GateRow] = []
    for label, base in sorted(baseline["cells"].items()):
        if cell_filter and cell_filter not in label:
            continue
        cell = current.get(label)
        for name, ref in base["metrics"].items():
            tol = tolerances.get(name, Tolerance.parse(FALLBACK_TOLERANCE))
            rows.append(_compare_metric(label, name, ref, cell, tol, require_ci))
        if throughput_ratio is not None and base.get("fps"):
            rows.append(_compare_fps(label, base["fps"], cell, throughput_ratio))
    if not rows:
        rows.append(GateRow(cell_filter or "*", "-", None, None, "-", MISSING,
                            "no baseline cell matches"))
    return GateResult(rows)


def _compare_metric(label: str, name: str, ref: Mapping[str, Any], cell: CellResult | None,
                    tol: Tolerance, require_ci: bool) -> GateRow:
    base = float(ref["value"])
    if cell is None or name not in cell.metrics or not math.isfinite(cell.metrics[name].value):
        return GateRow(label, name, base, None, str(tol), MISSING, "not in current results")
    now = cell.metrics[name]
    worse = (base - now.value) if ref["higher_is_better"] else (now.value - base)
    if worse > tol.allowed(base):
        if require_ci and now.ci_low is not None and now.ci_high is not None \
                and now.ci_low <= base <= now.ci_high:
            return GateRow(label, name, base, now.value, str(tol), PASS,
                           "beyond tolerance but baseline inside the current CI")
        return GateRow(label, name, base, now.value, str(tol), REGRESSION,
                       "lower is better" if not ref["higher_is_better"] else "higher is better")
    status = IMPROVED if worse < -tol.allowed(base) else PASS
    return GateRow(label, name, base, now.value, str(tol), status)


def _compare_fps(label: str, base: float, cell: CellResult | None, ratio: float) -> GateRow:
    allowed = f">= {ratio:g}x"
    if cell is None or not cell.fps:
        return GateRow(label, "fps", base, None, allowed, MISSING, "no throughput recorded")
    status = REGRESSION if cell.fps < base * ratio else PASS
    return GateRow(label, "fps", base, cell.fps, allowed, status, f"{cell.fps / base:.2f}x baseline")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def to_markdown(result: GateResult) -> str:
    verdict = {0: "PASS", 1: "FAIL: regression", 2: "FAIL: missing data"}[result.exit_code]
    lines = [f"## bench gate: {verdict}", "",
             "| cell | metric | baseline | current | delta | tolerance | status | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result.rows:
        lines.append(f"| {r.cell} | {r.metric} | {_fmt(r.baseline)} | {_fmt(r.current)} | "
                     f"{_fmt(r.delta)} | {r.allowed} | {r.status} | {r.note} |")
    return "\n".join(lines) + "\n"


def to_junit(result: GateResult) -> str:
    """JUnit XML: one test case per (cell, metric); regressions are failures."""
    failures = len(result.regressions)
    errors = len(result.missing)
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<testsuite name="bench-gate" tests="{len(result.rows)}" failures="{failures}" errors="{errors}">',
    ]
    for r in result.rows:
        out.append(f"  <testcase classname={quoteattr(r.cell)} name={quoteattr(r.metric)}>")
        detail = escape(f"baseline={_fmt(r.baseline)} current={_fmt(r.current)} "
                        f"tolerance={r.allowed} {r.note}")
        if r.status == REGRESSION:
            out.append(f"    <failure message={quoteattr(f'{r.metric} regressed')}>{detail}</failure>")
        elif r.status == MISSING:
            out.append(f"    <error message={quoteattr(f'{r.metric} missing')}>{detail}</error>")
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"
