"""The plugin manager: discovery, enabling/disabling, and the registry it builds.

Plugins are found through the ``bench`` entry-point group, as pytest finds its
plugins through ``pytest11``. ``-p no:NAME`` blocks one plugin;
``BENCH_DISABLE_PLUGIN_AUTOLOAD=1`` loads none automatically, and ``-p NAME``
then loads one explicitly (an entry-point name or an importable module).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import KINDS, ComponentSpec, Entry, Registry

ENTRY_POINT_GROUP = hookspecs.PROJECT
AUTOLOAD_ENV = "BENCH_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "BENCH_PLUGINS"  # extra -p arguments, space separated


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def create_manager(plugin_args: Iterable[str] = ()) -> pluggy.PluginManager:
    """Build a plugin manager honouring ``-p`` arguments and the environment."""
    args = [*os.environ.get(PLUGINS_ENV, "").split(), *plugin_args]
    blocked = {a[3:] for a in args if a.startswith("no:")}
    wanted = [a for a in args if not a.startswith("no:")]

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)

    if not os.environ.get(AUTOLOAD_ENV):
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:  # a broken third-party plugin must say who it is
            raise PluginError(
                f"Loading a '{ENTRY_POINT_GROUP}' entry-point plugin failed: {exc}",
                fix="disable the plugin with -p no:NAME (see `pip show` for what is installed)",
            ) from exc

    eps = _entry_points()
    for name in wanted:
        if pm.is_blocked(name) or pm.get_plugin(name) is not None:
            continue
        if name in eps:
            try:
                plugin = eps[name].load()
            except Exception as exc:
                raise PluginError(f"Plugin {name!r} ({eps[name].value}) failed to import: {exc}") from exc
            pm.register(plugin, name=name)
        else:
            try:
                plugin = importlib.import_module(name)
            except ImportError as exc:
                known = ", ".join(sorted(eps)) or "(none installed)"
                raise PluginError(
                    f"-p {name}: no entry point and no importable module of that name. "
                    f"Entry-point plugins: {known}"
                ) from exc
            pm.register(plugin, name=name)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"A plugin implements a hook headbench does not define: {exc}") from exc
    return pm


def _distribution_of(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    result = {}
    for plugin, dist in pm.list_plugin_distinfo():
        name = pm.get_name(plugin)
        if name is not None:
            result[name] = (dist.metadata["name"], dist.version)
    return result


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Ask every plugin for its components, recording who provided what."""
    registry = Registry()
    dists = _distribution_of(pm)
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order
            try:
                contribution = impl.function()
            except Exception as exc:
                raise PluginError(
                    f"Plugin {impl.plugin_name!r} failed in hook {hook_name}: {exc}"
                ) from exc
            if contribution is None:
                continue
            if not isinstance(contribution, Mapping):
                raise PluginError(
                    f"Plugin {impl.plugin_name!r}: {hook_name} must return a mapping "
                    f"name -> ComponentSpec, got {type(contribution).__name__}"
                )
            dist = dists.get(impl.plugin_name)
            for name, spec in contribution.items():
                registry.add(
                    Entry(
                        kind=kind,
                        name=name,
                        spec=_as_spec(spec, impl.plugin_name, hook_name, name),
                        plugin=impl.plugin_name,
                        distribution=dist[0] if dist else None,
                        dist_version=dist[1] if dist else None,
                    )
                )
    return registry


def _as_spec(value: Any, plugin: str, hook: str, name: str) -> ComponentSpec:
    if isinstance(value, ComponentSpec):
        return value
    if isinstance(value, str):
        return ComponentSpec(target=value)
    raise PluginError(
        f"Plugin {plugin!r}: {hook} gave {name!r} -> {value!r}; expected a ComponentSpec "
        "or a 'module:attr' string"
    )


class Session:
    """A plugin manager and the registry built from it."""

    def __init__(self, plugin_args: Iterable[str] = ()) -> None:
        self.plugin_args = tuple(plugin_args)
        self.pm = create_manager(self.plugin_args)
        self.registry = build_registry(self.pm)


_session: Session | None = None


def configure(plugin_args: Iterable[str] = ()) -> Session:
    """Rebuild the process-wide session with ``-p`` style arguments."""
    global _session
    _session = Session(plugin_args)
    return _session


def session() -> Session:
    """The process-wide session, built on first use."""
    global _session
    if _session is None:
        _session = Session()
    return _session
