"""Built-in metrics and their backends."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec

_BASE = "bench_plugins.metrics"

#: Pixel and distribution metrics compared with the ground-truth frames (SPEC 7).
_FRAME_METRICS: dict[str, ComponentSpec] = {
    "psnr": ComponentSpec(
        f"{_BASE}.psnr:PSNR",
        summary="PSNR (dB, higher better): piq's -10 log10(mse + 1e-8), mean over all frames",
        tasks=("talking", "listening"),
    ),
    "ssim": ComponentSpec(
        f"{_BASE}.ssim:SSIM",
        summary="SSIM (higher better): piq's gaussian 11/1.5 definition, mean over all frames",
        tasks=("talking", "listening"),
    ),
    "fid": ComponentSpec(
        f"{_BASE}.fid:FID",
        summary="FID (lower better): pytorch-fid InceptionV3 pool3, all GT vs all generated frames",
        requires=("pytorch_fid",),
        weights=f"{_BASE}.inception:weights_status",
        tasks=("talking", "listening"),
    ),
}


@hookimpl
def bench_add_metrics() -> dict[str, ComponentSpec]:
    return {**_FRAME_METRICS}
