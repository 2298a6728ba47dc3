"""The typed component registry.

Plugins contribute components as *lazy* entries: a name mapped to a
``"module:attr"`` factory path plus metadata. Nothing is imported until a
component is loaded, so ``bench list`` stays fast and never imports torch.
The registry records which plugin (and distribution) provided each entry, and
two plugins registering the same name is an error that names both.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, DuplicateComponentError, PluginError, UnknownComponentError

#: The component kinds and the hook that collects each one.
KINDS: dict[str, str] = {
    "driver": "bench_add_drivers",
    "renderer": "bench_add_renderers",
    "postproc": "bench_add_postprocessors",
    "metric": "bench_add_metrics",
    "dataset": "bench_add_datasets",
    "executor": "bench_add_executors",
    "segmenter": "bench_add_segmenters",
    "landmarker": "bench_add_landmarkers",
    "coeff_extractor": "bench_add_coeff_extractors",
    "face_embedder": "bench_add_face_embedders",
}


@dataclass(frozen=True)
class ComponentSpec:
    """How to build one component, without importing it.

    Attributes:
        target: ``"module:attr"`` of a callable ``(**options) -> component``.
        summary: one line for ``bench list``.
        version: the component's own version; part of every cell id, so bump it
            whenever outputs change.
        defaults: options bound to this name (``pirender-border`` is ``pirender``
            with ``padding_mode="border"``); explicit options override them.
        requires: importable module names the component needs beyond the core
            dependencies; ``bench list`` checks them with ``find_spec`` (no import).
        weights: optional ``"module:attr"`` of a zero-argument callable returning a
            :class:`WeightsStatus`; only called by ``bench list``/``bench doctor``.
        positional: option name that ``name:VALUE`` fills (``videos:DIR``).
        tasks: tasks the component serves (drivers, metrics); empty means any.
    """

    target: str
    summary: str = ""
    version: str = "1"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    weights: str | None = None
    positional: str | None = None
    tasks: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeightsStatus:
    """Whether a component's weights are present, and how to get them if not."""

    present: bool
    where: str
    how: str = ""


@dataclass(frozen=True)
class Entry:
    """A registered component: its spec plus where it came from."""

    kind: str
    name: str
    spec: ComponentSpec
    plugin: str
    distribution: str | None = None
    dist_version: str | None = None

    @property
    def provenance(self) -> str:
        if self.distribution:
            return f"plugin '{self.plugin}' from {self.distribution} {self.dist_version or ''}".strip()
        return f"plugin '{self.plugin}'"

    def missing_requirements(self) -> list[str]:
        """Optional modules this component needs that are not installed."""
        missing = []
        for module in self.spec.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                missing.append(module)
        return missing

    def weights_status(self) -> WeightsStatus | None:
        if self.spec.weights is None:
            return None
        check = resolve_target(self.spec.weights)
        status = check()
        if not isinstance(status, WeightsStatus):
            raise PluginError(f"{self.spec.weights} must return a WeightsStatus, got {status!r}")
        return status


def resolve_target(target: str) -> Callable[..., Any]:
    """Import ``"module:attr"`` (attr may be dotted) and return the attribute."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"Component target {target!r} is not of the form 'module:attr'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"Cannot import {module_name!r} for {target!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise PluginError(f"{module_name!r} has no attribute {attr!r} (target {target!r})") from exc
    return obj


def split_name(name: str) -> tuple[str, str | None]:
    """``"videos:DIR"`` -> ``("videos", "DIR")``; plain names have no argument."""
    base, sep, arg = name.partition(":")
    return base, (arg if sep else None)


class Registry:
    """All components known to a plugin manager, by kind and name."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}

    def add(self, entry: Entry) -> None:
        if entry.kind not in self._entries:
            raise PluginError(f"{entry.provenance} registers unknown kind {entry.kind!r}")
        existing = self._entries[entry.kind].get(entry.name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{entry.kind} {entry.name!r} is registered twice: by {existing.provenance} "
                f"and by {entry.provenance}",
                fix=f"disable one of them with -p no:{entry.plugin} or -p no:{existing.plugin}",
            )
        self._entries[entry.kind][entry.name] = entry

    def names(self, kind: str) -> list[str]:
        return sorted(self._kind(kind))

    def entries(self, kind: str | None = None) -> Iterator[Entry]:
        kinds = [kind] if kind else list(KINDS)
        for k in kinds:
            yield from (self._kind(k)[n] for n in sorted(self._kind(k)))

    def get(self, kind: str, name: str) -> Entry:
        base, _ = split_name(name)
        table = self._kind(kind)
        if base in table:
            return table[base]
        available = sorted(table)
        close = difflib.get_close_matches(base, available, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        listing = ", ".join(available) if available else "(none: is a plugin disabled?)"
        raise UnknownComponentError(
            f"Unknown {kind} {base!r}.{hint} Available: {listing}",
            fix=f"run `bench list {kind}` to see every {kind} and the plugin providing it",
        )

    def _kind(self, kind: str) -> dict[str, Entry]:
        if kind not in self._entries:
            close = difflib.get_close_matches(kind, list(KINDS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"Unknown component kind {kind!r}.{hint} Kinds: {', '.join(KINDS)}")
        return self._entries[kind]

    def build(self, kind: str, name: str, **options: Any) -> Any:
        """Import and construct a component with its defaults and ``options``."""
        entry = self.get(kind, name)
        _, arg = split_name(name)
        merged: dict[str, Any] = dict(entry.spec.defaults)
        if arg is not None:
            if entry.spec.positional is None:
                raise ConfigError(f"{kind} {entry.name!r} takes no ':' argument (got {name!r})")
            merged[entry.spec.positional] = arg
        merged.update(options)
        missing = entry.missing_requirements()
        if missing:
            from .errors import MissingDependencyError

            raise MissingDependencyError(
                f"{kind} {entry.name!r} ({entry.provenance}) needs missing module(s): "
                f"{', '.join(missing)}",
                fix=f"pip install {' '.join(missing)}",
            )
        factory = resolve_target(entry.spec.target)
        component = factory(**merged)
        # Components learn their registered identity (used in cell ids and reports).
        for attr, value in (("name", entry.name), ("version", entry.spec.version)):
            with contextlib.suppress(AttributeError):
                setattr(component, f"registered_{attr}", value)
        return component
