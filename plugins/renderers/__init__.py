"""Built-in renderers."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec


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
    }
