"""Factories for the built-in datasets (imported only when a dataset is loaded)."""

from __future__ import annotations

from pathlib import Path

from bench.data.vico import ViCoDataset
from bench.errors import ConfigError


def vico(root: str | Path | None = None, *, strict: bool = False) -> ViCoDataset:
    """The ViCo dataset at ``root`` (``vico:/path/to/ViCo``)."""
    if root is None:
        raise ConfigError("dataset 'vico' needs a folder", fix="use vico:/path/to/ViCo")
    return ViCoDataset(root, name="vico", strict=strict)


def vico_mini(*, strict: bool = False) -> ViCoDataset:
    """The embedded vico-mini dataset, generated into $BENCH_HOME on first use."""
    from bench.data.synth import ensure_vico_mini

    return ViCoDataset(ensure_vico_mini(), name="vico-mini", strict=strict)
