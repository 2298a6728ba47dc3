"""The report's view of results: one :class:`CellResult` per cell.

Reports and gates read results only through :func:`load_cells`, which adapts
the results store's tables; everything downstream is plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricValue:
    value: float
    higher_is_better: bool
    ci_low: float | None = None
    ci_high: float | None = None
    backend: str = ""
    label: str = ""


@dataclass
class CellResult:
    cell_id: str
    dataset: str
    split: str
    task: str
    driver: str
    renderer: str
    postproc: str
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    fps: float | None = None
    device: str | None = None
    n_clips: int = 0
    failures: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def board(self) -> tuple[str, str, str]:
        """Cells are compared only within one dataset/split/task board."""
        return (self.dataset, self.split, self.task)

    @property
    def label(self) -> str:
        """Stable human key of a cell across code versions (gates match on it)."""
        return f"{self.dataset}/{self.split}/{self.task}/{self.driver}/{self.renderer}/{self.postproc}"

    @property
    def method(self) -> str:
        post = "" if self.postproc in ("", "none") else f" + {self.postproc}"
        return f"{self.driver} / {self.renderer}{post}"
