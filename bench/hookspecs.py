"""The manual of headbench's plugin hooks.

A plugin is any module (or object) with functions marked ``@hookimpl`` whose
names match the specs below; it is found through the ``bench`` entry-point group
(``[project.entry-points.bench]`` in its ``pyproject.toml``). The built-in
plugins under ``plugins/`` register the same way.

Every ``bench_add_*`` hook:

* is called **once**, the first time the registry is built (at the first
  ``bench.load``/``bench.available`` or CLI command), with no arguments;
* returns a mapping ``{name: ComponentSpec | "module:attr"}`` of the
  components the plugin contributes, or ``None`` for none;
* is **not** ``firstresult``: every plugin's answer is collected, and the
  registry records which plugin gave each name. Two plugins giving the same
  name is an error naming both.

Return specs, not objects: the target is only imported when the component is
loaded, so listing components never imports heavy libraries such as torch.
Hooks are called with keyword arguments only (none, today), which lets later
versions add arguments without breaking existing plugins.
"""

from __future__ import annotations

from collections.abc import Mapping

import pluggy

from .registry import ComponentSpec

PROJECT = "bench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Contribution = Mapping[str, "ComponentSpec | str"] | None


@hookspec
def bench_add_drivers() -> Contribution:
    """Contribute drivers: audio (+ speaker motion) -> per-frame 3DMM coefficients.

    A driver factory returns an object following :class:`bench.contracts.Driver`:
    ``predict(batch) -> (B,T,73)`` coefficients in driver order, denormalised,
    with its torch module (if any) as ``.model``.
    """


@hookspec
def bench_add_renderers() -> Contribution:
    """Contribute renderers: reference image + coefficients -> frames.

    A renderer follows :class:`bench.contracts.Renderer`; it streams frames in
    batches and declares the render options it accepts in ``render_options``
    (post-processors may request them, e.g. ``padding_mode='border'``).
    """


@hookspec
def bench_add_postprocessors() -> Contribution:
    """Contribute post-processors: per-clip stateful repairs of generated frames.

    A post-processor follows :class:`bench.contracts.PostProcessor`; chains are
    written ``a+b`` on the command line and applied in that order.
    """


@hookspec
def bench_add_metrics() -> Contribution:
    """Contribute metrics: subclasses of :class:`bench.metric.Metric`.

    Metrics declare direction, required inputs and mergeable state so the
    harness can pool them over a split, shard them and bootstrap them.
    """


@hookspec
def bench_add_datasets() -> Contribution:
    """Contribute datasets: objects following :class:`bench.contracts.Dataset`.

    ``bench run --dataset NAME`` looks the name up here; a path instead of a
    name is read with the ``vico`` reader.
    """


@hookspec
def bench_add_executors() -> Contribution:
    """Contribute executors: how cells (or shards of cells) are run.

    An executor follows :class:`bench.contracts.Executor` (``local``,
    ``submitit``, ``ray``, ...).
    """


@hookspec
def bench_add_segmenters() -> Contribution:
    """Contribute segmenters for fusion: frames -> background probability masks.

    ``segment(frames (B,3,H,W) in [0,1]) -> (B,1,H,W) in [0,1]`` where 1 means
    background.
    """


@hookspec
def bench_add_landmarkers() -> Contribution:
    """Contribute 68-point facial landmark detectors (backends of ``lmd``).

    ``detect(frames (B,3,H,W) in [0,1]) -> (B,68,2)`` pixels, NaN where no face.
    """


@hookspec
def bench_add_coeff_extractors() -> Contribution:
    """Contribute 3DMM coefficient extractors (video -> (T,73)), for ``source=video`` FDs."""


@hookspec
def bench_add_face_embedders() -> Contribution:
    """Contribute identity embedders (backends of ``csim``): frames -> (B,D) unit vectors."""
