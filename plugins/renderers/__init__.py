"""Built-in renderers."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec

_PIRENDER = "bench_plugins.renderers.pirender"


@hookimpl
def bench_add_renderers() -> dict[str, ComponentSpec]:
    return {
        "rig": ComponentSpec(
            "bench_plugins.renderers.rig:RigRenderer",
            summary="weight-free warp of the reference by coefficient differences (vico-mini's ground truth)",
        ),
        "videos": ComponentSpec(
            "bench_plugins.renderers.videos:VideosRenderer",
            summary="frames of an external method read from DIR/{uuid}.{role}.mp4 (videos:DIR)",
            positional="root",
        ),
        "pirender": ComponentSpec(
            f"{_PIRENDER}:make_pirender",
            summary="PIRender (official net_G_ema checkpoint), batched streaming inference",
            version="1",
            weights=f"{_PIRENDER}:weights_status",
        ),
        "pirender-border": ComponentSpec(
            f"{_PIRENDER}:make_pirender",
            summary="PIRender with border padding in the warp (no black borders)",
            version="1",
            defaults={"padding_mode": "border"},
            weights=f"{_PIRENDER}:weights_status",
        ),
    }
