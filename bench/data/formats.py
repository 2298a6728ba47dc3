"""Readers and writers for the official ViCo file formats (SPEC sections 1-2).

Every reader validates what it returns (shapes, dtypes, finite values) and raises
:class:`~bench.errors.InputError` naming the file, the problem and a fix; every writer
produces exactly the layout the official baseline (``dc3ea9f/vico_challenge_baseline``)
reads, so files round-trip between headbench and the official scripts:

* ``recons/{uuid}.{role}.mat``: scipy ``.mat`` with ``coeff`` (T,257) and
  ``transform_params`` (T,5), float32 (Deep3DFaceRecon output);
* ``video_feats/{uuid}.{role}.bin``: ``torch.save`` of a dict of numpy arrays,
  ``'angle.exp.trans'`` (T,73) driver order and ``'id.gamma.tex'`` (T,187);
* ``video_feats_mean_std.bin``: ``torch.save`` of
  ``{'angle.exp.trans': {'mean','std'}, 'id.gamma.tex': {'mean','std'}}`` (torch tensors);
* ``audio_feats_mean_std.bin``: ``torch.save`` of a *flat* ``{'mean','std'}`` (the
  official script saves the audio statistics without a key); :func:`read_mean_std`
  returns it under :data:`AUDIO_KEY` so both files read the same way;
* split CSVs (``train.csv``/``val.csv``/``test.csv``): ``video_id, uuid, speaker_id,
  listener_id`` and, in the full dataset, ``attitude``.

torch is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

DYNAMIC_KEY = "angle.exp.trans"  # (T,73) driver order
FIXED_KEY = "id.gamma.tex"  # (T,187) id 80 | gamma 27 | tex 80
AUDIO_KEY = "audio"  # key under which the flat audio mean/std file is returned
N_DYNAMIC = 73
N_FIXED = 187
N_RECON = 257
N_TRANSFORM = 5

ATTITUDES: tuple[str, ...] = ("positive", "neutral", "negative")
SPLIT_COLUMNS: tuple[str, ...] = ("video_id", "uuid", "speaker_id", "listener_id")


# --------------------------------------------------------------------------- helpers


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise InputError(path, f"{what} not found", fix="check the dataset folder layout (SPEC 1)")
    if path.stat().st_size == 0:
        raise InputError(path, f"{what} is empty (0 bytes)", fix="re-extract or re-download it")


def _check_matrix(path: Path, name: str, array: Any, width: int, rows: int | None = None) -> np.ndarray:
    """Validate a (T,width) finite numeric matrix and return it as float32."""
    arr = np.asarray(array)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise InputError(path, f"'{name}' is not numeric (dtype {arr.dtype})")
    if arr.ndim != 2 or arr.shape[1] != width:
        raise InputError(path, f"'{name}' must have shape (T,{width}), got {arr.shape}")
    if rows is not None and arr.shape[0] != rows:
        raise InputError(path, f"'{name}' has {arr.shape[0]} rows, expected {rows} (one per frame)")
    if arr.shape[0] == 0:
        raise InputError(path, f"'{name}' has no frames")
    if not np.all(np.isfinite(arr)):
        bad = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise InputError(path, f"'{name}' contains NaN/inf values (first at frame {bad})",
                         fix="re-run the 3DMM reconstruction for this clip or drop it")
    return arr.astype(np.float32, copy=False)


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _numpy_safe_globals() -> list[Any]:
    """numpy globals that torch's weights-only unpickler must accept for dicts of arrays.

    Files written under numpy 1.x name ``numpy.core.multiarray._reconstruct``; numpy 2
    moved it to ``numpy._core``: both spellings are allowed.
    """
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    dtype_classes = {type(np.dtype(t)) for t in ("f2", "f4", "f8", "i4", "i8", "u1", "b1")}
    return [
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *dtype_classes,
    ]


def torch_load(path: str | Path) -> Any:
    """``torch.load`` on CPU with the weights-only unpickler, numpy arrays allowed.

    Official ``.bin`` files are pickles of numpy arrays/torch tensors; loading them
    weights-only means a crafted file cannot run code. A file that needs other globals
    is rejected with an :class:`InputError`, not unpickled unsafely.
    """
    import pickle

    import torch

    path = Path(path)
    _require_file(path, "torch file")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(path, f"not a loadable tensor/array file: {str(exc).splitlines()[-1]}",
                         fix="it must be a torch.save of tensors/numpy arrays (SPEC 2)") from exc
    except (EOFError, RuntimeError, ValueError, OSError) as exc:
        raise InputError(path, f"truncated or corrupt torch file ({exc.__class__.__name__}: {exc})",
                         fix="re-create the file") from exc


def _write_bytes_atomic(data: bytes, path: Path) -> None:
    tmp = _atomic_target(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _torch_save_atomic(obj: Any, path: Path) -> None:
    import io

    import torch

    # Saving through a buffer keeps the zip's record names fixed ("archive/..."): given a
    # path, torch names them after the (random) temporary file, so bytes would differ.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _write_bytes_atomic(buffer.getvalue(), path)


#: MAT-file v5 header text (116 bytes). scipy stamps the creation time there, which would
#: make identical data produce different files; a fixed text keeps writes byte-identical.
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: headbench".ljust(116, b" ")


# ------------------------------------------------------------------- recons/*.mat


def read_recon_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a Deep3DFaceRecon ``.mat``.

    Returns:
        ``coeff`` (T,257) float32 and ``transform_params`` (T,5) float32
        (``[w0, h0, s, tx, ty]``; crop = ``transform_params[:, -3:]``).
    """
    import scipy.io

    path = Path(path)
    _require_file(path, "reconstruction .mat")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several unrelated types for broken files
        raise InputError(path, f"unreadable .mat file ({exc.__class__.__name__}: {exc})",
                         fix="re-create it with scipy.io.savemat or Deep3DFaceRecon") from exc
    for key in ("coeff", "transform_params"):
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise InputError(path, f"missing key '{key}' (found: {found})",
                             fix="a recons .mat holds 'coeff' (T,257) and 'transform_params' (T,5)")
    coeff = _check_matrix(path, "coeff", mat["coeff"], N_RECON)
    params = _check_matrix(path, "transform_params", mat["transform_params"], N_TRANSFORM,
                           rows=coeff.shape[0])
    return coeff, params


def write_recon_mat(path: str | Path, coeff: np.ndarray, transform_params: np.ndarray) -> None:
    """Write ``coeff`` (T,257) and ``transform_params`` (T,5) as float32 to a ``.mat``."""
    import scipy.io

    path = Path(path)
    coeff = _check_matrix(path, "coeff", coeff, N_RECON)
    params = _check_matrix(path, "transform_params", transform_params, N_TRANSFORM,
                           rows=coeff.shape[0])
    import io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"coeff": coeff, "transform_params": params})
    data = buffer.getvalue()
    _write_bytes_atomic(_MAT_HEADER + data[len(_MAT_HEADER):], path)


# ---------------------------------------------------------------- video_feats/*.bin


def read_video_feats(path: str | Path) -> dict[str, np.ndarray]:
    """Read a baseline ``video_feats/{stem}.bin``.

    Returns:
        ``{'angle.exp.trans': (T,73) float32, 'id.gamma.tex': (T,187) float32}``;
        ``id.gamma.tex`` is optional in files made by other tools and then absent.
    """
    path = Path(path)
    data = torch_load(path)
    if not isinstance(data, Mapping) or DYNAMIC_KEY not in data:
        keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise InputError(path, f"expected a dict with key '{DYNAMIC_KEY}', got {keys}",
                         fix="video_feats .bin files are torch.save({'angle.exp.trans': (T,73), "
                         "'id.gamma.tex': (T,187)})")
    out = {DYNAMIC_KEY: _check_matrix(path, DYNAMIC_KEY, _to_numpy(data[DYNAMIC_KEY]), N_DYNAMIC)}
    if FIXED_KEY in data:
        out[FIXED_KEY] = _check_matrix(path, FIXED_KEY, _to_numpy(data[FIXED_KEY]), N_FIXED,
                                       rows=out[DYNAMIC_KEY].shape[0])
    return out


def write_video_feats(path: str | Path, angle_exp_trans: np.ndarray,
                      id_gamma_tex: np.ndarray) -> None:
    """Write the official ``.bin``: numpy float32 ``(T,73)`` and ``(T,187)`` in a dict."""
    path = Path(path)
    dyn = _check_matrix(path, DYNAMIC_KEY, angle_exp_trans, N_DYNAMIC)
    fixed = _check_matrix(path, FIXED_KEY, id_gamma_tex, N_FIXED, rows=dyn.shape[0])
    _torch_save_atomic({FIXED_KEY: np.ascontiguousarray(fixed),
                        DYNAMIC_KEY: np.ascontiguousarray(dyn)}, path)


def video_feats_from_recon(coeff: np.ndarray, transform_params: np.ndarray) -> dict[str, np.ndarray]:
    """The ``.bin`` content for a ``.mat``: driver order (T,73) and id|gamma|tex (T,187)."""
    from .. import coeffs as C

    return {
        DYNAMIC_KEY: C.from_recon(coeff, transform_params),
        FIXED_KEY: np.concatenate(
            [coeff[:, C.RECON_ID], coeff[:, C.RECON_GAMMA], coeff[:, C.RECON_TEX]], axis=1
        ).astype(np.float32),
    }


# --------------------------------------------------------------------- mean/std


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _check_stats(path: Path, key: str, entry: Any) -> dict[str, np.ndarray]:
    if not isinstance(entry, Mapping) or "mean" not in entry or "std" not in entry:
        raise InputError(path, f"entry '{key or '<flat>'}' must be a dict with 'mean' and 'std'",
                         fix="regenerate it with `bench data stats`")
    mean, std = _to_numpy(entry["mean"]), _to_numpy(entry["std"])
    name = key or "<flat>"
    if mean.ndim != 1 or mean.shape != std.shape:
        raise InputError(path, f"'{name}' mean/std must be 1-D of equal length, got {mean.shape} "
                         f"and {std.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise InputError(path, f"'{name}' mean/std contain NaN/inf", fix="regenerate it with `bench data stats`")
    if np.any(std < 0):
        raise InputError(path, f"'{name}' std has negative values", fix="regenerate it with `bench data stats`")
    return {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}


def read_mean_std(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read ``video_feats_mean_std.bin`` or ``audio_feats_mean_std.bin``.

    Returns:
        ``{key: {'mean': (D,) float32, 'std': (D,) float32}}``; the flat audio file
        (``{'mean','std'}`` at top level, as the official script writes it) comes back
        as ``{AUDIO_KEY: {...}}``.
    """
    path = Path(path)
    data = torch_load(path)
    if not isinstance(data, Mapping):
        raise InputError(path, f"expected a dict of mean/std, got {type(data).__name__}")
    if "mean" in data or "std" in data:  # the flat (audio) layout
        return {AUDIO_KEY: _check_stats(path, "", data)}
    if not data:
        raise InputError(path, "empty mean/std file", fix="regenerate it with `bench data stats`")
    return {str(key): _check_stats(path, str(key), entry) for key, entry in data.items()}


def write_mean_std(path: str | Path, stats: Mapping[str, Mapping[str, Any]]) -> None:
    """Write a mean/std file in the official layout (values saved as torch tensors).

    ``stats`` maps key -> ``{'mean': (D,), 'std': (D,)}``. A mapping with the single key
    :data:`AUDIO_KEY` is written flat (``{'mean','std'}``), as the official audio file is.
    """
    import torch

    path = Path(path)
    checked = {key: _check_stats(path, key, entry) for key, entry in stats.items()}

    def as_tensors(entry: dict[str, np.ndarray]) -> dict[str, Any]:
        return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in entry.items()}

    if set(checked) == {AUDIO_KEY}:
        _torch_save_atomic(as_tensors(checked[AUDIO_KEY]), path)
    else:
        _torch_save_atomic({key: as_tensors(entry) for key, entry in checked.items()}, path)


# ------------------------------------------------------------------ split CSVs


@dataclass(frozen=True)
class SplitRow:
    """One row of a split CSV: a conversation clip and who is in it."""

    video_id: str
    uuid: str
    speaker_id: str
    listener_id: str
    attitude: str | None = None


def read_split_csv(path: str | Path) -> list[SplitRow]:
    """Read a split CSV (``video_id, uuid, speaker_id, listener_id[, attitude]``).

    Header names are matched after stripping spaces, in any order; extra columns are
    ignored. Missing columns, short rows, empty fields, duplicate uuids and attitudes
    other than positive/neutral/negative raise :class:`InputError` naming the row
    (1-based line number in the file).
    """
    path = Path(path)
    _require_file(path, "split CSV")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"unreadable CSV ({exc})") from exc
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError(path, "empty CSV (no header)",
                         fix=f"the header must be {', '.join(SPLIT_COLUMNS)}[, attitude]") from None
    missing = [c for c in SPLIT_COLUMNS if c not in header]
    if missing:
        raise InputError(path, f"missing column(s) {missing} in header {header}",
                         fix=f"the header must be {', '.join(SPLIT_COLUMNS)}[, attitude]")
    index = {name: header.index(name) for name in (*SPLIT_COLUMNS, "attitude") if name in header}
    rows: list[SplitRow] = []
    seen: dict[str, int] = {}
    for line_no, record in enumerate(reader, start=2):
        if not record or all(not field.strip() for field in record):
            continue  # blank lines are harmless
        if len(record) < len(header):
            raise InputError(path, f"row {line_no}: {len(record)} fields, expected {len(header)} "
                             f"({record})", fix="fix or delete the malformed row")
        values = {name: record[i].strip() for name, i in index.items()}
        empty = [name for name in SPLIT_COLUMNS if not values[name]]
        if empty:
            raise InputError(path, f"row {line_no}: empty field(s) {empty}", fix="fill or delete the row")
        attitude = values.get("attitude") or None
        if attitude is not None and attitude not in ATTITUDES:
            raise InputError(path, f"row {line_no}: unknown attitude '{attitude}'",
                             fix=f"use one of {', '.join(ATTITUDES)} (or leave it empty)")
        uuid = values["uuid"]
        if uuid in seen:
            raise InputError(path, f"row {line_no}: duplicate uuid '{uuid}' (also row {seen[uuid]})")
        seen[uuid] = line_no
        rows.append(SplitRow(values["video_id"], uuid, values["speaker_id"],
                             values["listener_id"], attitude))
    return rows


def write_split_csv(path: str | Path, rows: Iterable[SplitRow]) -> None:
    """Write a split CSV; the ``attitude`` column is written when any row has one."""
    path = Path(path)
    rows = list(rows)
    with_attitude = any(row.attitude is not None for row in rows)
    for row in rows:
        if row.attitude is not None and row.attitude not in ATTITUDES:
            raise InputError(path, f"unknown attitude '{row.attitude}' for uuid {row.uuid}",
                             fix=f"use one of {', '.join(ATTITUDES)}")
    header = [*SPLIT_COLUMNS, *(("attitude",) if with_attitude else ())]
    tmp = _atomic_target(path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in rows:
                fields = [row.video_id, row.uuid, row.speaker_id, row.listener_id]
                if with_attitude:
                    fields.append(row.attitude or "")
                writer.writerow(fields)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
