"""The ViCo data layer: official file formats, the dataset reader, validation, statistics."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..contracts import Dataset


def open_dataset(name_or_path: str | Path, **options: Any) -> Dataset:
    """A dataset from a folder path (read as ViCo layout) or a registered dataset name.

    ``"vico-mini"`` or ``"vico:/data/ViCo"`` go through ``bench.load("dataset", ...)``;
    an existing directory (or any string containing a path separator) is opened directly.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if isinstance(name_or_path, Path) or path.is_dir() or ("/" in text and ":" not in text):
        from .vico import ViCoDataset

        return ViCoDataset(path, **options)
    import bench

    return bench.load("dataset", text, **options)
