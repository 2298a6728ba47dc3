"""Driver checkpoints: official-layout state dicts with a JSON sidecar, and their store.

A checkpoint is two files side by side:

* ``NAME.pt``: ``torch.save`` of the model's state dict in the *official* key layout
  (loadable by the official code after ``model.load_state_dict``), tensors on CPU;
* ``NAME.json``: the sidecar - model config (architecture and options), the
  normalisation statistics the model was trained with, training metrics, and the
  versions of the software that made it.

Trained checkpoints live in a store under ``$BENCH_HOME/checkpoints`` keyed by
(driver, dataset, config hash, seed), so a changed recipe or dataset never reuses a
stale run. Importing this module does not import torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError
from .paths import bench_home

if TYPE_CHECKING:
    import torch

SIDECAR_FORMAT = 1


def config_hash(config: Mapping[str, Any]) -> str:
    """Short stable hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def versions() -> dict[str, str]:
    """Versions recorded in every sidecar."""
    import torch

    from . import __version__

    return {"headbench": __version__, "torch": torch.__version__, "python": platform.python_version()}


def sidecar_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".json")


def save_checkpoint(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    sidecar: Mapping[str, Any],
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``path`` (.pt) and its sidecar atomically; ``dtype`` casts float tensors (e.g. fp16 to ship small)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.clone()
    meta = dict(sidecar)
    meta.setdefault("format", SIDECAR_FORMAT)
    meta["stored_dtype"] = str(dtype or "as trained").replace("torch.", "")
    _atomic_write(path, lambda handle: torch.save(tensors, handle))
    text = json.dumps(meta, indent=1, sort_keys=True, default=str)
    _atomic_write(sidecar_path(path), lambda handle: handle.write(text.encode()))
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint and its sidecar (``{}`` if there is none, e.g. an official file).

    Float tensors come back as float32 whatever they were stored as.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found", fix="check the path, or train one with `bench train`")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"cannot read as a torch checkpoint: {exc}") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(hasattr(v, "shape") for v in obj.values()):
        raise InputError(path, "is not a state dict (a mapping of parameter names to tensors)")
    state = {str(k): (v.float() if v.is_floating_point() else v) for k, v in obj.items()}
    meta: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(side, f"sidecar is not valid JSON: {exc}") from exc
    return state, meta


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Remove a leading ``module.`` (DataParallel checkpoints) from every key that has it."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


@dataclass(frozen=True)
class StateDictMismatch:
    """How a state dict differs from a model's: sorted key lists and shape mismatches."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (key, checkpoint, model)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)


def state_dict_mismatch(model: torch.nn.Module, state: Mapping[str, Any]) -> StateDictMismatch:
    """Compare ``state`` with ``model.state_dict()`` (keys and shapes) before a strict load,
    so loaders can name every problem at once instead of torch's first error."""
    expected = model.state_dict()
    return StateDictMismatch(
        missing=sorted(set(expected) - set(state)),
        unexpected=sorted(set(state) - set(expected)),
        shapes=sorted(
            (k, tuple(state[k].shape), tuple(expected[k].shape))
            for k in set(state) & set(expected)
            if tuple(state[k].shape) != tuple(expected[k].shape)
        ),
    )


def load_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str | Path | None = None) -> None:
    """Load ``state_dict`` into ``model`` strictly, with a ``module.`` prefix tolerated.

    Raises:
        InputError: listing missing keys, unexpected keys and shape mismatches, and
            naming the official layout (``model.layout``) that was expected.
    """
    state = strip_prefix(state_dict)
    mismatch = state_dict_mismatch(model, state)
    missing, unexpected = mismatch.missing, mismatch.unexpected
    shapes = [f"{k}: checkpoint {got} vs model {want}" for k, got, want in mismatch.shapes]
    if mismatch:
        layout = getattr(model, "layout", type(model).__name__)
        parts = [f"does not fit the official layout '{layout}' ({type(model).__name__})"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            parts.append(f"wrong shapes ({len(shapes)}): {'; '.join(shapes)}")
        raise InputError(
            source,
            "\n  ".join(parts),
            fix=f"use a checkpoint saved from the '{layout}' architecture (key names in "
            f"golden/state_dicts/{layout}.json), or the driver whose layout it has",
        )
    model.load_state_dict(state, strict=True)


@dataclass(frozen=True)
class RunKey:
    """Identity of one training run in the store."""

    driver: str
    dataset: str
    config_hash: str
    seed: int

    def folder(self, root: Path) -> Path:
        return root / self.driver / self.dataset / self.config_hash / f"seed{self.seed}"


class CheckpointStore:
    """Trained runs under ``$BENCH_HOME/checkpoints/{driver}/{dataset}/{hash}/seed{N}/``.

    Each run folder holds ``best.pt`` (+ ``best.json``), the best epoch by validation
    loss, and ``snap{k}.pt`` for the next best epochs (used by self-ensembles).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else bench_home() / "checkpoints"

    def run_dir(self, key: RunKey) -> Path:
        return key.folder(self.root)

    def best(self, key: RunKey) -> Path:
        return self.run_dir(key) / "best.pt"

    def is_done(self, key: RunKey) -> bool:
        """A run is finished once its best checkpoint and sidecar both exist."""
        best = self.best(key)
        return best.is_file() and sidecar_path(best).is_file()

    def snapshots(self, key: RunKey) -> list[Path]:
        """Best first: ``best.pt`` then ``snap1.pt``, ``snap2.pt``..."""
        folder = self.run_dir(key)
        snaps = sorted(folder.glob("snap*.pt"), key=lambda p: int(p.stem[4:] or 0))
        return [self.best(key), *snaps] if self.is_done(key) else []


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; checkpoints are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
