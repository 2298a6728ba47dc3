"""The PIRender renderer: official checkpoint, streamed batched inference.

``pirender`` reproduces the official inference (RenYurui/PIRender ``inference.py``: the
``net_G_ema`` generator, semantic windows of 2*13+1 frames clamped at the clip ends,
``grid_sample`` with zero padding); ``pirender-border`` is the same network with
``padding_mode='border'`` in the warp. Frames are rendered in batches as the caller
consumes them, so memory does not grow with clip length.

Weights: the official ``epoch_00190_iteration_000400000_checkpoint.pt`` (a dict holding
``net_G``, ``net_G_ema``, optimiser state), from the PIRender project's released
checkpoints, at ``$BENCH_HOME/weights/pirender/`` or wherever the ``weights`` option says.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.checkpoints import state_dict_mismatch
from bench.coeffs import N_COEFFS, to_pirender_order
from bench.errors import ConfigError, InputError, MissingDependencyError
from bench.paths import weights_dir
from bench.registry import WeightsStatus

from .pirender_net import SEMANTIC_RADIUS, PIRenderGenerator

CHECKPOINT_NAME = "epoch_00190_iteration_000400000_checkpoint.pt"
#: multiply-adds x 2 of the official forward pass for one 256x256 frame
OFFICIAL_GFLOPS_PER_FRAME = 123.0
PRECISIONS = ("fp32", "bf16", "fp16")
PADDING_MODES = ("zeros", "border", "reflection")
_HOW_TO_GET = (
    "get the official PIRender checkpoint (github.com/RenYurui/PIRender, "
    "scripts/download_weights.sh: face.zip from Google Drive, which unpacks to "
    f"result/face/{CHECKPOINT_NAME}) and copy that file to {{where}}/, "
    "or pass its path with --renderer-weights PATH"
)


def default_weights_path() -> Path:
    """``$BENCH_HOME/weights/pirender/epoch_00190_iteration_000400000_checkpoint.pt``."""
    return weights_dir("pirender") / CHECKPOINT_NAME


def weights_status() -> WeightsStatus:
    """For ``bench list`` / ``bench doctor``: is the default checkpoint in place?"""
    path = default_weights_path()
    return WeightsStatus(path.is_file(), str(path), _HOW_TO_GET.format(where=path.parent))


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``net_G_ema`` state dict from an official checkpoint (or a bare state dict).

    Loaded with ``torch.load(weights_only=True)``: the official file holds only tensors,
    numbers and containers, so no code from the file is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDependencyError(
            f"PIRender weights not found: {path}", fix=_HOW_TO_GET.format(where=path.parent)
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise InputError(
            path,
            f"cannot be read as a PyTorch checkpoint with weights_only=True ({exc})",
            fix=f"use the official PIRender file {CHECKPOINT_NAME}, or re-save the state dict "
            "with torch.save({'net_G_ema': model.state_dict()}, path)",
        ) from exc
    if isinstance(checkpoint, dict) and "net_G_ema" in checkpoint:
        state = checkpoint["net_G_ema"]
    elif isinstance(checkpoint, dict) and any(str(k).startswith("mapping_net.") for k in checkpoint):
        state = checkpoint
    else:
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint)
        raise InputError(
            path,
            f"is not a PIRender checkpoint: expected a dict with 'net_G_ema' (found {found})",
            fix=f"use the official {CHECKPOINT_NAME} (its 'net_G_ema' entry is loaded)",
        )
    # official checkpoints saved from DistributedDataParallel prefix every key
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def load_generator(path: str | Path, padding_mode: str = "zeros") -> PIRenderGenerator:
    """Build the generator and load ``net_G_ema`` strictly; key problems are listed."""
    state = load_state_dict(path)
    model = PIRenderGenerator(padding_mode=padding_mode)
    mismatch = state_dict_mismatch(model, state)
    if mismatch:
        shapes = [f"{k}: checkpoint {got} != model {want}" for k, got, want in mismatch.shapes]
        parts = []
        for title, items in (("missing keys", mismatch.missing), ("unexpected keys", mismatch.unexpected),
                             ("shape mismatches", shapes)):
            if items:
                listed = ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
                parts.append(f"{title}: {listed}")
        raise InputError(
            path,
            "does not match the official PIRender generator (face.yaml): " + "; ".join(parts),
            fix="use the official PIRender 'face' checkpoint; its net_G_ema has 304 tensors",
        )
    model.load_state_dict(state, strict=True)
    return model.freeze()


def _available_memory(device: torch.device) -> int:
    """Bytes that a batch may use on ``device`` (free accelerator memory or MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_batch_size(height: int, width: int, device: torch.device, precision: str) -> int:
    """Largest useful batch that fits in half the available memory.

    Peak activation memory is ~90 MB per 256x256 frame in float32 (the editing net's
    128-channel full-resolution layer, its skips, and the allocator's slack). On CPU,
    throughput stops improving beyond a handful of frames, so the batch is capped at 8.
    """
    per_frame = 90e6 * (height * width) / 256**2 * (0.6 if precision != "fp32" else 1.0)
    cap = 64 if device.type == "cuda" else 8
    return max(1, min(cap, int(0.5 * _available_memory(device) / per_frame)))


class PIRenderRenderer:
    """Renderer (``bench.contracts.Renderer``) driving the official PIRender network.

    Options:
        weights: checkpoint path (default :func:`default_weights_path`).
        padding_mode: the warp's ``grid_sample`` padding: ``zeros`` (official) or ``border``.
        batch_size: frames per forward pass, or ``"auto"`` (fits the device's free memory).
        precision: ``fp32`` (official), ``bf16`` (autocast, CPU and GPU), ``fp16`` (GPU).
        device: torch device string (default ``cuda`` when available, else ``cpu``).
    """

    render_options = frozenset({"padding_mode"})

    def __init__(
        self,
        weights: str | Path | None = None,
        padding_mode: str = "zeros",
        batch_size: int | str = "auto",
        precision: str = "fp32",
        device: str | torch.device | None = None,
    ) -> None:
        if padding_mode not in PADDING_MODES:
            raise ConfigError(f"pirender: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"pirender: precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device if device is not None else
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(
                "pirender: precision 'fp16' needs a CUDA device (CPU fp16 convolutions are slow "
                "and inexact)", fix="use --precision bf16 on CPU"
            )
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            try:
                batch_size = int(batch_size)
            except (TypeError, ValueError):
                batch_size = 0
            if batch_size < 1:
                raise ConfigError("pirender: batch_size must be a positive integer or 'auto'")
        self.batch_size: int | str = batch_size
        self.precision = precision
        self.padding_mode = padding_mode
        self.weights = Path(weights) if weights is not None else default_weights_path()
        model = load_generator(self.weights, padding_mode)
        self.channels_last = True
        self.model: PIRenderGenerator = model.to(self.device).to(memory_format=torch.channels_last).freeze()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def batch_for(self, height: int, width: int) -> int:
        if self.batch_size == "auto":
            return auto_batch_size(height, width, self.device, self.precision)
        return int(self.batch_size)

    def render(
        self,
        source: torch.Tensor,
        coeffs: torch.Tensor,
        *,
        source_coeffs: torch.Tensor | None = None,
    ) -> Iterator[torch.Tensor]:
        """Stream the clip's frames.

        Args:
            source: (3,H,W) reference image in [0,1]; H and W multiples of 32.
            coeffs: (T,73) driver-order coefficients (denormalised).
            source_coeffs: accepted for the contract; PIRender's same-identity inference
                (the ViCo setting) does not use them.

        Yields:
            (b,3,H,W) float32 frames in [0,1] on the renderer's device, in order.
        """
        del source_coeffs
        if source.dim() != 3 or source.shape[0] != 3:
            raise ValueError(f"source must be (3,H,W), got {tuple(source.shape)}")
        if coeffs.dim() != 2 or coeffs.shape[1] != N_COEFFS:
            raise ValueError(f"coeffs must be (T,{N_COEFFS}) in driver order, got {tuple(coeffs.shape)}")
        height, width = source.shape[1:]
        if height % 32 or width % 32:
            raise ValueError(f"PIRender needs H and W divisible by 32, got {height}x{width}")
        semantics = to_pirender_order(coeffs.detach().float()).to(self.device)  # (T,73), small
        return self._stream(source, semantics, self.batch_for(height, width))

    def _stream(self, source: torch.Tensor, semantics: torch.Tensor, batch: int) -> Iterator[torch.Tensor]:
        n = semantics.shape[0]
        with torch.inference_mode():
            image = source.detach().to(self.device, torch.float32)[None].mul(2).sub_(1)
            image = image.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                features = self.model.prepare_source(image)
            for start in range(0, n, batch):
                stop = min(n, start + batch)
                padded = semantic_span(semantics, start, stop)
                descriptors = self.model.describe_sequence(padded)  # float32, (b,256)
                with self._autocast():
                    fake = self.model.synthesize(features, descriptors)["fake_image"]
                yield fake.float().clamp_(-1, 1).add_(1).mul_(0.5).contiguous()


def semantic_span(semantics: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """(T,73) PIRender-order coefficients -> (73, stop-start+26) for frames start..stop-1.

    Frame t's official window is frames t-13..t+13 clamped to [0,T-1]; the windows of a
    run of frames overlap, so the run needs only the span start-13 .. stop-1+13 (clamped):
    window t is columns t-start .. t-start+26 of the result.
    """
    n = semantics.shape[0]
    index = torch.arange(start - SEMANTIC_RADIUS, stop + SEMANTIC_RADIUS, device=semantics.device)
    return semantics[index.clamp_(0, n - 1)].T


def make_pirender(**options: Any) -> PIRenderRenderer:
    """Registry factory for ``pirender`` and ``pirender-border``."""
    return PIRenderRenderer(**options)


# --------------------------------------------------------------------------- throughput


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, size: int = 2048, seconds: float = 1.0) -> float:
    """Measured GEMM rate (GFLOP/s) of ``size``-square matrices in ``dtype`` on ``device``."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = 0.0
    with torch.inference_mode():
        a @ b
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            _sync(device)
            t0 = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput_report(
    batch_sizes: Sequence[int] = (1, 8, 32),
    precisions: Sequence[str] = ("fp32", "bf16"),
    size: int = 256,
    seconds: float = 5.0,
    device: str | None = None,
    weights: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Frames/s of PIRender at ``size`` x ``size`` for each batch size and precision.

    Uses the official checkpoint when ``weights`` (or the default path) exists, else
    seeded random weights (speed does not depend on the values). Each row holds
    ``precision, batch_size, fps, gemm_gflops`` (the same run's measured matrix-multiply
    peak for that dtype) and ``peak_fraction = fps * 123 GFLOP / gemm_gflops`` (the
    official network's work per frame over the peak).
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    path = Path(weights) if weights is not None else default_weights_path()
    if path.is_file():
        model = load_generator(path)
    else:
        torch.manual_seed(0)
        model = PIRenderGenerator().freeze()
    model = model.to(dev).to(memory_format=torch.channels_last).freeze()
    rows: list[dict[str, Any]] = []
    for precision in precisions:
        if precision == "fp16" and dev.type != "cuda":
            continue
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        peak = matmul_peak_gflops(dtype, dev)
        for batch in batch_sizes:
            fps = measure_fps(model, batch, size, precision, dev, seconds)
            rows.append({
                "precision": precision, "batch_size": batch, "size": size, "device": str(dev),
                "fps": fps, "gemm_gflops": peak,
                "peak_fraction": fps * OFFICIAL_GFLOPS_PER_FRAME * (size / 256) ** 2 / peak,
            })
    return rows


def measure_fps(
    model: PIRenderGenerator, batch: int, size: int, precision: str, device: torch.device, seconds: float
) -> float:
    """Frames/s of ``model.synthesize`` on random inputs (after one warm-up batch)."""
    gen = torch.Generator().manual_seed(0)
    image = (torch.rand(1, 3, size, size, generator=gen) * 2 - 1).to(device)
    image = image.contiguous(memory_format=torch.channels_last)
    coeffs = torch.randn(batch + 2 * SEMANTIC_RADIUS, N_COEFFS, generator=gen).to(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        features = model.prepare_source(image)

        def step() -> None:
            model.synthesize(features, model.describe_sequence(coeffs.T))

        step()
        _sync(device)
        frames, t0 = 0, time.perf_counter()
        while True:
            step()
            _sync(device)
            frames += batch
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return frames / elapsed
