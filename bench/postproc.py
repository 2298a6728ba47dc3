"""Post-processor chains: parsing ``fusion+border``, building them, checking renderer options.

The harness calls, while planning a cell (before any work):

    names = parse_chain("fusion+border")            # ["fusion", "border"]
    chain = build_chain(names, device="cuda", fusion={"setting": "paper"})
    opts = check_renderer_options(chain, "pirender", renderer.render_options)
    renderer = bench.load("renderer", "pirender", **opts)

and then, per clip, :func:`start_clip` and :func:`apply_chain` batch by batch. The
chain's canonical name (:func:`chain_name`) is part of the cell id. This module does
not import torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ConfigError

SEPARATOR = "+"


def parse_chain(spec: str | Sequence[str] | None) -> list[str]:
    """``"fusion+border"`` -> ``["fusion", "border"]`` (order kept); ``""``/``"none"``/None -> ``[]``."""
    if spec is None:
        return []
    parts = spec.split(SEPARATOR) if isinstance(spec, str) else list(spec)
    names = [p.strip() for p in parts]
    if names in ([""], ["none"]):
        return []
    if any(not n for n in names):
        raise ConfigError(f"post-processor chain {spec!r} has an empty name",
                          fix="write names joined by '+', e.g. --postproc fusion+border")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"post-processor chain {spec!r} names {', '.join(duplicates)} twice",
                          fix="list each post-processor once")
    return names


def chain_name(names: Sequence[str]) -> str:
    """The canonical chain name for cell ids: ``"fusion+border"``, or ``"none"``."""
    return SEPARATOR.join(names) if names else "none"


def build_chain(
    names: Sequence[str],
    *,
    device: str | None = None,
    **options: Mapping[str, Any],
) -> list[Any]:
    """Build the post-processors ``names`` in order.

    Args:
        names: registered post-processor names (see :func:`parse_chain`).
        device: the run's device, passed to every post-processor as ``device=``.
        **options: per post-processor options, keyed by name:
            ``build_chain(["fusion"], fusion={"setting": "paper"})``.
    """
    import bench

    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"options given for {', '.join(unknown)}, which is not in the chain "
                          f"{chain_name(names)!r}")
    chain = []
    for name in names:
        opts = dict(options.get(name, {}))
        if device is not None:
            opts.setdefault("device", device)
        chain.append(bench.load("postproc", name, **opts))
    return chain


def _label(postproc: Any) -> str:
    return str(getattr(postproc, "registered_name", type(postproc).__name__))


def check_renderer_options(
    postprocs: Iterable[Any],
    renderer_name: str,
    renderer_render_options: Iterable[str],
) -> dict[str, Any]:
    """Merge the renderer options the post-processors request, or fail while planning.

    Returns:
        ``{option: value}`` to build the renderer with.

    Raises:
        ConfigError: a post-processor requests an option the renderer does not list in
            its ``render_options`` (the message names both), or two post-processors
            request different values for one option.
    """
    accepted = set(renderer_render_options)
    merged: dict[str, Any] = {}
    requested_by: dict[str, str] = {}
    for postproc in postprocs:
        label = _label(postproc)
        for option, value in dict(getattr(postproc, "renderer_options", {}) or {}).items():
            if option not in accepted:
                listing = ", ".join(sorted(accepted)) or "none"
                raise ConfigError(
                    f"post-processor {label!r} needs renderer option {option}={value!r}, but renderer "
                    f"{renderer_name!r} does not accept {option!r} (its render options: {listing})",
                    fix=f"drop {label!r} from --postproc, or use a renderer that supports {option}",
                )
            if option in merged and merged[option] != value:
                raise ConfigError(
                    f"post-processors {requested_by[option]!r} and {label!r} request different "
                    f"renderer {option}: {merged[option]!r} vs {value!r}",
                    fix="remove one of them from the chain",
                )
            merged[option] = value
            requested_by[option] = label
    return merged


def start_clip(chain: Sequence[Any], reference: Any) -> None:
    """Start a clip on every post-processor: ``reference`` is (3,H,W) in [0,1]."""
    for postproc in chain:
        postproc.start_clip(reference)


def apply_chain(chain: Sequence[Any], frames: Any) -> Any:
    """Run a (b,3,H,W) batch through the chain in order."""
    for postproc in chain:
        frames = postproc.process(frames)
    return frames
