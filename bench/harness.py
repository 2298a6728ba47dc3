"""The harness: plan cells from a grid, then stream every clip of a cell through
driver -> renderer -> post-processor chain -> metrics, recording per-clip metric
states, errors and per-stage throughput in the results store.

A *cell* is one (dataset, split, task, driver, renderer, post-processor chain,
metrics, seed, ...) combination. Its :func:`cell_spec` is a JSON-able dict of
everything that can change its numbers (component names, versions, options,
weights hashes, metric backends, dataset content hash); :func:`cell_id` is a hash
of it, so a finished cell is recognised and skipped however it was asked for.

Planning (:func:`plan`) resolves every name and checks that the pieces fit
(task support, renderer options requested by post-processors, metric
availability) before any model is loaded or any frame decoded. Running
(:func:`run_plan`) hands shards of cells to an executor; each shard runs
:func:`run_work_item`, which writes its clip rows in one transaction, and the
coordinator merges the shards of a cell into its summary.

Memory stays bounded by the batch size: ground-truth frames are decoded in a
background thread into a small queue, generated frames are consumed batch by
batch by the post-processors, the metrics and (optionally) a background video
encoder, and nothing holds a whole clip of frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import queue
import random
import re
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contracts import ROLE_OF_TASK, TASKS, WorkItem
from .errors import BenchError, ConfigError, InputError, MissingDependencyError

if TYPE_CHECKING:
    import torch

    from .contracts import Dataset, Sample
    from .metric import Metric
    from .store import Store

#: Bump when the harness changes how numbers are produced (part of every cell id).
HARNESS_VERSION = "1"

#: The default metrics per task, in display order (SPEC section 7); names that are
#: not registered are skipped and reported. CPBD and CSIM, also in the challenge's
#: set, are opt-in (``--metrics``): on a CPU their offline backends cost more per
#: frame than everything else in the default run together.
CHALLENGE_METRICS: dict[str, tuple[str, ...]] = {
    "talking": ("psnr", "ssim", "fid", "lmd", "expfd", "anglefd", "transfd"),
    "listening": ("psnr", "ssim", "fid", "expfd", "anglefd", "transfd"),
}

STAGES: tuple[str, ...] = ("driver", "render", "postproc", "metrics", "io")

PRECISIONS = ("fp32", "bf16", "fp16")

EventCallback = Callable[..., None]


# --------------------------------------------------------------------------- specs
def canonical_json(obj: Any) -> str:
    """Stable JSON (sorted keys, no whitespace) used for hashing specs."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"option value {obj!r} ({type(obj).__name__}) cannot go into a cell spec")


def cell_id(spec: Mapping[str, Any]) -> str:
    """The cell's id: 20 hex digits of the SHA-256 of its canonical spec."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:20]


def parse_chain(text: str | None) -> list[str]:
    """``"a+b"`` -> ``["a", "b"]``; ``"none"``/empty -> ``[]``."""
    try:  # the post-processing helper owns the syntax when it is installed
        from .postproc import parse_chain as _parse

        return list(_parse(text or "none"))
    except ImportError:
        pass
    if text is None or text.strip().lower() in ("", "none"):
        return []
    parts = [p.strip() for p in text.split("+")]
    if any(not p for p in parts):
        raise ConfigError(f"post-processor chain {text!r} has an empty element", fix="write it as a+b")
    return parts


def chain_label(chain: Sequence[str]) -> str:
    return "+".join(chain) if chain else "none"


def weights_hash(path: str | Path) -> str:
    """SHA-256 of a weights file (or of every file in a folder, by relative path).

    Memoised per (path, size, mtime) in ``$BENCH_HOME/cache`` (see
    :func:`bench.paths.memoised_file_sha256`), so planning a finished grid again does
    not re-read large checkpoints.
    """
    from .paths import memoised_file_sha256

    p = Path(path).expanduser().resolve()
    if p.is_dir():
        digest = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            digest.update(f"{f.relative_to(p)}:{weights_hash(f)}\n".encode())
        return digest.hexdigest()
    if not p.is_file():
        raise InputError(p, "weights file not found", fix="check the weights path you passed")
    return memoised_file_sha256(p)


_WEIGHT_KEYS = ("weights", "checkpoint", "ckpt")


def _weights_of(options: Mapping[str, Any]) -> dict[str, str]:
    """Hashes of option values that name weights files (so retrained weights change the id)."""
    out: dict[str, str] = {}
    for key, value in options.items():
        if any(w in key for w in _WEIGHT_KEYS) and isinstance(value, (str, Path)) and value:
            out[key] = weights_hash(value)
    return out


def _options_for_spec(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as recorded in a spec: weights paths are replaced by their hashes."""
    hashes = _weights_of(options)
    return {k: (f"sha256:{hashes[k]}" if k in hashes else v) for k, v in sorted(options.items())}


@dataclass
class ComponentChoice:
    """One component as planned: registry name, the options it is built with."""

    kind: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> Any:
        import bench.plugins

        return bench.plugins.session().registry.get(self.kind, self.name)

    def spec_entry(self) -> dict[str, Any]:
        entry = self.entry()
        factory_version = ""
        with contextlib.suppress(Exception):
            from .registry import resolve_target

            factory_version = str(getattr(resolve_target(entry.spec.target), "version", "") or "")
        options = {**entry.spec.defaults, **self.options}
        out = {
            "name": self.name,
            "version": entry.spec.version,
            "impl_version": factory_version,
            "options": _options_for_spec(options),
            "plugin": entry.plugin,
        }
        if not _weights_of(options) and entry.spec.weights:
            # default weights (no path given): hash what the component will load
            status = entry.weights_status()
            if status is not None and status.present and Path(status.where).exists():
                out["weights_sha256"] = weights_hash(status.where)
        # Components reading input files (the `videos` renderer) hash them into the spec,
        # so changed files make a new cell: factory.spec_content(name, options) -> str.
        with contextlib.suppress(AttributeError, BenchError):
            from .registry import resolve_target

            hasher = getattr(resolve_target(entry.spec.target), "spec_content", None)
            if callable(hasher):
                out["content"] = hasher(self.name, options)
        return out

    def build(self) -> Any:
        import bench

        return bench.load(self.kind, self.name, **self.options)


def runtime_options(kind: str, name: str, options: Mapping[str, Any], *, device: str | None,
                    precision: str | None = None) -> tuple[dict[str, Any], bool]:
    """Options to build a component with: ``options`` plus the run's ``device`` (and
    ``precision`` for drivers/renderers/post-processors) when the factory names them
    as parameters. Returns them and whether the component handles precision itself.

    These are runtime choices, not part of the cell spec: the device shows up in
    metric backends (and the run record), the precision is in the spec already.
    """
    import bench.plugins

    from .registry import resolve_target

    out = dict(options)
    try:
        factory = resolve_target(bench.plugins.session().registry.get(kind, name).spec.target)
        params = inspect.signature(factory).parameters
    except (BenchError, TypeError, ValueError):
        return out, False
    if device is not None and "device" in params and "device" not in out:
        out["device"] = device
    handles = False
    if precision is not None and kind in ("driver", "renderer", "postproc") and "precision" in params:
        out.setdefault("precision", precision)
        handles = True
    return out, handles


@dataclass
class MetricChoice:
    name: str
    options: dict[str, Any]
    instance: Metric


@dataclass
class Cell:
    """A planned cell: its spec, id and how to rebuild its components anywhere."""

    spec: dict[str, Any]
    id: str
    dataset_ref: str
    driver: ComponentChoice
    renderer: ComponentChoice
    postproc: list[ComponentChoice]
    metrics: list[tuple[str, dict[str, Any]]]

    @property
    def label(self) -> str:
        return f"{self.spec['driver']['name']} | {self.spec['renderer']['name']} | " \
               f"{chain_label([p['name'] for p in self.spec['postproc']])}"

    def payload(self) -> dict[str, Any]:
        """What a worker needs to run this cell (picklable, no live objects)."""
        return {
            "spec": self.spec,
            "dataset_ref": self.dataset_ref,
            "driver": (self.driver.name, self.driver.options),
            "renderer": (self.renderer.name, self.renderer.options),
            "postproc": [(p.name, p.options) for p in self.postproc],
            "metrics": self.metrics,
        }


@dataclass
class Plan:
    cells: list[Cell]
    dataset: Any
    skipped_metrics: list[str]
    metric_instances: dict[str, Metric]


# --------------------------------------------------------------------------- datasets
_DATASETS: dict[str, Any] = {}


def open_dataset(ref: Any) -> Dataset:
    """A dataset from a name, a path or an object (memoised per process)."""
    if not isinstance(ref, (str, Path)):
        return ref
    key = str(ref)
    if key in _DATASETS:
        return _DATASETS[key]
    from .data import open_dataset as _open

    ds = _open(key)
    _DATASETS[key] = ds
    return ds


def register_dataset(ref: str, dataset: Any) -> None:
    """Make an in-memory dataset reachable by ``ref`` in this process (tests, notebooks)."""
    _DATASETS[ref] = dataset


# --------------------------------------------------------------------------- planning
def _target_attr(choice: ComponentChoice, attr: str) -> Any:
    """A class-level attribute of a component's factory, without building it."""
    from .registry import resolve_target

    try:
        factory = resolve_target(choice.entry().spec.target)
    except BenchError:
        return None
    value = getattr(factory, attr, None)
    return None if isinstance(value, property) else value


def _renderer_options_requested(postprocs: Sequence[ComponentChoice]) -> dict[str, Any]:
    """Renderer options the chain asks for; conflicting requests are a ConfigError."""
    wanted: dict[str, tuple[Any, str]] = {}
    for p in postprocs:
        opts = _target_attr(p, "renderer_options") or {}
        if not isinstance(opts, Mapping):
            continue
        for key, value in opts.items():
            if key in wanted and wanted[key][0] != value:
                raise ConfigError(
                    f"post-processors {wanted[key][1]!r} and {p.name!r} ask for different renderer "
                    f"option {key}: {wanted[key][0]!r} vs {value!r}",
                    fix="drop one of them from the chain",
                )
            wanted[key] = (value, p.name)
    return {k: v for k, (v, _) in wanted.items()}


def _check_renderer_accepts(renderer: ComponentChoice, requested: Mapping[str, Any],
                            postprocs: Sequence[ComponentChoice]) -> None:
    if not requested:
        return
    accepted = _target_attr(renderer, "render_options")
    if accepted is None:
        return  # declared per instance only; the renderer validates when built
    unknown = sorted(set(requested) - set(accepted))
    if unknown:
        names = chain_label([p.name for p in postprocs])
        raise ConfigError(
            f"post-processing {names!r} needs renderer option(s) {', '.join(unknown)}, which "
            f"renderer {renderer.name!r} does not accept (it accepts: "
            f"{', '.join(sorted(accepted)) or 'none'})",
            fix="choose a renderer that supports them, or another post-processor",
        )


def _check_task(choice: ComponentChoice, task: str) -> None:
    tasks = choice.entry().spec.tasks
    if tasks and task not in tasks:
        raise ConfigError(
            f"{choice.kind} {choice.name!r} does not support task {task!r} (it supports: "
            f"{', '.join(tasks)})",
            fix=f"choose another {choice.kind} or --task {'/'.join(tasks)}",
        )


def resolve_metrics(
    names: Sequence[str] | None,
    task: str,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | None = None,
) -> tuple[list[MetricChoice], list[str]]:
    """Build the metrics of a cell.

    With ``names`` None the task's challenge set is used and names that are not
    registered (or miss an optional dependency) are skipped and returned; names
    asked for explicitly must exist and support the task.
    """
    import bench
    import bench.plugins

    options = options or {}
    registry = bench.plugins.session().registry
    explicit = names is not None
    wanted = list(names) if names is not None else list(CHALLENGE_METRICS[task])
    chosen: list[MetricChoice] = []
    skipped: list[str] = []
    for name in wanted:
        if not explicit and name not in registry.names("metric"):
            skipped.append(f"{name} (not registered)")
            continue
        entry = registry.get("metric", name)
        if entry.spec.tasks and task not in entry.spec.tasks:
            if explicit:
                raise ConfigError(f"metric {name!r} does not apply to task {task!r}",
                                  fix=f"drop it from --metrics (it serves {', '.join(entry.spec.tasks)})")
            skipped.append(f"{name} (not for {task})")
            continue
        opts = dict(options.get(name, {}))
        try:
            instance = _metric_instance(name, opts, device)
        except MissingDependencyError as exc:
            if explicit:
                raise
            skipped.append(f"{name} ({exc.message})")
            continue
        if task not in getattr(instance, "tasks", TASKS):
            if explicit:
                raise ConfigError(f"metric {name!r} does not apply to task {task!r}")
            skipped.append(f"{name} (not for {task})")
            continue
        chosen.append(MetricChoice(name, opts, instance))
    if not chosen:
        raise ConfigError(f"no metric available for task {task!r}",
                          fix="install a metrics plugin or pass --metrics")
    return chosen, skipped


def _metric_spec(choice: MetricChoice) -> dict[str, Any]:
    import bench.plugins

    entry = bench.plugins.session().registry.get("metric", choice.name)
    m = choice.instance
    return {
        "name": choice.name,
        "version": entry.spec.version,
        "impl_version": str(getattr(m, "version", "")),
        "backend": str(m.backend),
        "options": _options_for_spec({**entry.spec.defaults, **choice.options}),
    }


def plan(
    *,
    dataset: Any = "vico-mini",
    split: str = "test",
    task: str = "talking",
    drivers: Sequence[str] = ("static",),
    renderers: Sequence[str] = ("rig",),
    postprocs: Sequence[str | Sequence[str]] = ("none",),
    metrics: Sequence[str] | None = None,
    driver_options: Mapping[str, Mapping[str, Any]] | None = None,
    renderer_options: Mapping[str, Mapping[str, Any]] | None = None,
    postproc_options: Mapping[str, Mapping[str, Any]] | None = None,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    renderer_weights: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 16,
    precision: str = "fp32",
    limit: int | None = None,
    cells: Sequence[Mapping[str, str]] | None = None,
    device: str = "auto",
) -> Plan:
    """Resolve a grid into cells, validating everything before any work.

    ``drivers x renderers x postprocs`` is the cartesian product; ``cells`` (a
    list of ``{"driver", "renderer", "postproc"}``) gives explicit cells instead.
    Options are given per component name (``{"pirender": {"padding_mode": ...}}``).
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}", fix=f"use one of {', '.join(TASKS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}", fix=f"use one of {', '.join(PRECISIONS)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    driver_options = driver_options or {}
    renderer_options = renderer_options or {}
    postproc_options = postproc_options or {}

    ds = open_dataset(dataset)
    dataset_ref = dataset if isinstance(dataset, (str, Path)) else getattr(ds, "name", "dataset")
    if isinstance(dataset, (str, Path)) is False:
        register_dataset(str(dataset_ref), ds)
    if split not in ds.splits():
        raise ConfigError(f"dataset {ds.name!r} has no split {split!r} (it has: {', '.join(ds.splits())})")
    content_hash = ds.content_hash()

    combos: list[tuple[str, str, list[str]]] = []
    if cells is not None:
        for c in cells:
            combos.append((c["driver"], c.get("renderer", "rig"), parse_chain(c.get("postproc", "none"))))
    else:
        chains = [parse_chain(p) if isinstance(p, str) else list(p) for p in postprocs]
        for d in drivers:
            for r in renderers:
                for ch in chains:
                    combos.append((d, r, ch))
    if not combos:
        raise ConfigError("the grid is empty", fix="give at least one driver, renderer and post-processor chain")

    metric_choices, skipped = resolve_metrics(metrics, task, metric_options, resolve_device(device))
    metric_specs = [_metric_spec(m) for m in metric_choices]

    planned: list[Cell] = []
    seen: set[str] = set()
    for d, r, ch in combos:
        drv = ComponentChoice("driver", d, dict(driver_options.get(d, {})))
        drv.entry()
        _check_task(drv, task)
        pps = [ComponentChoice("postproc", p, dict(postproc_options.get(p, {}))) for p in ch]
        for p in pps:
            p.entry()
        requested = _renderer_options_requested(pps)
        ropts = dict(renderer_options.get(r, {}))
        if renderer_weights is not None:
            ropts["weights"] = str(renderer_weights)
        ren = ComponentChoice("renderer", r, {**ropts, **requested})
        ren.entry()
        _check_renderer_accepts(ren, requested, pps)
        spec: dict[str, Any] = {
            "harness": HARNESS_VERSION,
            "dataset": {"name": ds.name, "content_hash": content_hash},
            "split": split,
            "task": task,
            "driver": drv.spec_entry(),
            "renderer": ren.spec_entry(),
            "postproc": [p.spec_entry() for p in pps],
            "metrics": metric_specs,
            "seed": int(seed),
            "batch_size": int(batch_size),
            "precision": precision,
            "limit": limit,
        }
        cid = cell_id(spec)
        if cid in seen:
            continue
        seen.add(cid)
        planned.append(Cell(spec, cid, str(dataset_ref), drv, ren, pps,
                            [(m.name, m.options) for m in metric_choices]))
    return Plan(planned, ds, skipped, {m.name: m.instance for m in metric_choices})


# --------------------------------------------------------------------------- runtime helpers
def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} but CUDA is not available", fix="use --device cpu or auto")
    return device


def clip_seed(seed: int, uuid: str) -> int:
    """Per-clip seed: identical whichever shard or order a clip runs in."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{uuid}".encode()).digest()[:4], "little")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class StageTimer:
    """Accumulates seconds per stage; synchronises the device so GPU work is counted."""

    def __init__(self, device: str) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def call(self, name: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """``fn(**kwargs)`` timed into ``name`` (used per metric inside the metrics stage)."""
        start = time.perf_counter()
        try:
            return fn(**kwargs)
        finally:
            self.sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class PeakMemory:
    """Peak resident memory of this process over a window (Linux VmHWM, reset per window)."""

    def __init__(self, device: str) -> None:
        self._cuda = device.startswith("cuda")

    def start(self) -> None:
        with contextlib.suppress(OSError):
            # "5" resets the peak RSS counter (Linux >= 4.0); without it we report the process peak.
            Path("/proc/self/clear_refs").write_text("5")
        if self._cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def host_bytes(self) -> int:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    def device_bytes(self) -> int | None:
        if not self._cuda:
            return None
        import torch

        return int(torch.cuda.max_memory_allocated())


_DONE = object()


class _Prefetch:
    """Runs an iterator in a background thread into a bounded queue (decode overlaps compute)."""

    def __init__(self, make: Callable[[], Iterator[Any]], depth: int = 2) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.busy = 0.0
        self._thread = threading.Thread(target=self._work, args=(make,), daemon=True)
        self._thread.start()

    def _work(self, make: Callable[[], Iterator[Any]]) -> None:
        try:
            it = make()
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                finally:
                    self.busy += time.perf_counter() - t0
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            self._put_final(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put_final(exc)

    def _put_final(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        """The next item, or ``_DONE``."""
        item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._thread.join(timeout=5)


class _Rebatcher:
    """Serves exactly ``n`` ground-truth frames at a time from a batch stream."""

    def __init__(self, source: _Prefetch) -> None:
        self._source = source
        self._pending: list[torch.Tensor] = []
        self._have = 0
        self.exhausted = False

    def take(self, n: int) -> torch.Tensor | None:
        import torch

        while self._have < n and not self.exhausted:
            item = self._source.get()
            if item is _DONE:
                self.exhausted = True
                break
            self._pending.append(item)
            self._have += int(item.shape[0])
        if self._have < n:
            return None
        joined = torch.cat(self._pending, 0) if len(self._pending) > 1 else self._pending[0]
        out, rest = joined[:n], joined[n:]
        self._pending = [rest] if rest.shape[0] else []
        self._have = int(rest.shape[0])
        return out

    def leftover(self) -> int:
        """Frames the ground truth has beyond what was taken (drains the stream)."""
        while not self.exhausted:
            item = self._source.get()
            if item is _DONE:
                self.exhausted = True
            else:
                self._have += int(item.shape[0])
        return self._have


def gt_key(ds_hash: str, uuid: str, role: str, start: int | None = None, stop: int | None = None) -> str:
    """Content key of a clip's ground truth (or of frames ``start:stop`` of it).

    Dataset content hash + uuid + role + frame range; made of ``[A-Za-z0-9._-]`` only,
    because metrics use it as a cache file name.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{uuid}.{role}")
    key = f"{ds_hash[:16]}_{safe}"
    return key if start is None else f"{key}_f{start}-{stop}"


def rechunk(batches: Iterator[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Regroup a stream of (b,...) batches into chunks of exactly ``size`` (the last may
    be shorter), holding at most one chunk plus one input batch."""
    import torch

    pending: list[torch.Tensor] = []
    have = 0
    for batch in batches:
        pending.append(batch)
        have += int(batch.shape[0])
        if have < size:
            continue
        joined = torch.cat(pending, 0) if len(pending) > 1 else pending[0]
        cut = (have // size) * size
        for start in range(0, cut, size):
            yield joined[start:start + size]
        pending = [joined[cut:]] if cut < have else []
        have -= cut
    if have:
        yield torch.cat(pending, 0) if len(pending) > 1 else pending[0]


class _BackgroundWriter:
    """Encodes a clip's frames to H.264 in a background thread."""

    def __init__(self, path: Path, fps: float) -> None:
        from .video import VideoWriter

        self._writer = VideoWriter(path, max(1, round(fps)))
        self._q: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self.busy = 0.0
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is not None:
                continue
            t0 = time.perf_counter()
            try:
                self._writer.write_uint8(item)
            except BaseException as exc:
                self._error = exc
            self.busy += time.perf_counter() - t0

    def write(self, frames: torch.Tensor) -> None:
        from .video import to_uint8

        self._q.put(to_uint8(frames))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            self._writer.abort()
            raise self._error
        self._writer.close()

    def abort(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=10)
        self._writer.abort()


def _to_device(component: Any, device: str) -> None:
    """Move a component (or its ``.model``) to ``device`` and into eval mode."""
    import torch

    targets = [component, getattr(component, "model", None)]
    for t in targets:
        if isinstance(t, torch.nn.Module):
            t.to(device).eval()
            return
    mover = getattr(component, "to", None)
    if callable(mover):
        with contextlib.suppress(TypeError):
            mover(device)


def _per_clip_values(name: str, metric: Any) -> bool:
    """Whether a per-clip value is meaningful and cheap (FID of one clip is neither)."""
    flag = getattr(metric, "per_clip_values", None)
    if flag is not None:
        return bool(flag)
    return not name.startswith("fid")


def _takes_sample(renderer: Any) -> bool:
    """Whether ``renderer.render`` accepts the optional ``sample=`` keyword."""
    try:
        return "sample" in inspect.signature(renderer.render).parameters
    except (TypeError, ValueError):
        return False


def _update_kwargs(metric: Any) -> tuple[frozenset[str], bool]:
    """The inputs to pass to ``metric.update`` and whether it takes ``gt_key``."""
    inputs = frozenset(getattr(metric, "inputs", ()))
    takes_key = "gt_key" in inputs
    if not takes_key:
        with contextlib.suppress(TypeError, ValueError):
            takes_key = "gt_key" in inspect.signature(metric.update).parameters
    return inputs - {"gt_key"}, takes_key


# --------------------------------------------------------------------------- results of a shard
@dataclass
class ClipResult:
    index: int
    uuid: str
    n_frames: int
    states: dict[str, dict[str, Any]]  # metric name -> state tensors
    values: dict[str, float]
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0


@dataclass
class ShardResult:
    cell_id: str
    shard: int
    n_shards: int
    clips: list[ClipResult]
    stage_seconds: dict[str, float]
    io_busy: float
    frames: int
    wall: float
    warmup_clips: int
    peak_host_bytes: int
    peak_device_bytes: int | None
    device: str
    metric_info: dict[str, dict[str, Any]]


class ClipFailure(Exception):
    """A clip could not be evaluated (recorded, the cell continues)."""


# --------------------------------------------------------------------------- running one shard
@dataclass
class RunOptions:
    device: str = "auto"
    save_videos: str | None = None
    strict: bool = False
    video_subdir: str | None = None  # set when a grid writes several cells' videos


_METRIC_CACHE: dict[str, Any] = {}


def _metric_instance(name: str, options: Mapping[str, Any], device: str | None = None) -> Any:
    """One metric instance per (name, options, device) per process, so models load once
    and GT-side caches are reused across cells."""
    import bench

    build, _ = runtime_options("metric", name, options, device=device)
    # Per thread: metric state is mutable and must never be shared by concurrent runs.
    key = f"{name}:{canonical_json(build)}@{threading.get_ident()}"
    if key not in _METRIC_CACHE:
        _METRIC_CACHE[key] = bench.load("metric", name, **build)
    return _METRIC_CACHE[key]


def _select(samples: Sequence[Sample], limit: int | None, shard: int, n_shards: int) -> list[tuple[int, Sample]]:
    chosen = list(enumerate(samples))
    if limit is not None:
        chosen = chosen[:limit]
    return [(i, s) for i, s in chosen if i % n_shards == shard]


def run_shard(payload: Mapping[str, Any], shard: int = 0, n_shards: int = 1,
              options: RunOptions | None = None, on_event: EventCallback | None = None,
              *, skip: Collection[int] = (), on_clip: Callable[[ClipResult], None] | None = None,
              ) -> ShardResult:
    """Run the clips of one shard of a cell; returns per-clip states and timings.

    Models are built once here, then every clip streams through them. ``skip``
    holds clip indices already done (a resumed shard); ``on_clip`` receives each
    clip's result as soon as it is complete (the store saves it then).
    """
    import torch

    import bench

    options = options or RunOptions()
    spec = payload["spec"]
    cid = cell_id(spec)
    device = resolve_device(options.device)
    task = spec["task"]
    role = ROLE_OF_TASK[task]
    emit = on_event or (lambda *a, **k: None)

    ds = open_dataset(payload["dataset_ref"])
    if ds.content_hash() != spec["dataset"]["content_hash"]:
        raise ConfigError(f"dataset {payload['dataset_ref']!r} changed since the cell was planned")
    samples = ds.samples(spec["split"], task)
    todo = [(i, smp) for i, smp in _select(samples, spec["limit"], shard, n_shards) if i not in set(skip)]

    precision = spec["precision"]
    handles: dict[str, bool] = {}

    def build(kind: str, name: str, opts: Mapping[str, Any]) -> Any:
        full, handles[f"{kind}:{name}"] = runtime_options(kind, name, opts, device=device,
                                                          precision=precision)
        component = bench.load(kind, name, **full)
        _to_device(component, device)
        return component

    driver = build("driver", *payload["driver"])
    renderer = build("renderer", *payload["renderer"])
    posts = [build("postproc", n, o) for n, o in payload["postproc"]]
    own_precision = {
        "driver": handles[f"driver:{payload['driver'][0]}"],
        "render": handles[f"renderer:{payload['renderer'][0]}"],
        "postproc": all(handles[f"postproc:{n}"] for n, _ in payload["postproc"]),
    }
    metrics = {name: _metric_instance(name, opts, device) for name, opts in payload["metrics"]}
    metric_info = {
        n: {"higher_is_better": bool(getattr(m, "higher_is_better", True)), "backend": str(m.backend),
            "label": str(getattr(m, "label", "")), "frame_level": bool(getattr(m, "frame_level", True))}
        for n, m in metrics.items()
    }
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    def autocast(stage: str) -> Any:
        # components that take a `precision` option run their own autocast
        if autocast_dtype is None or own_precision.get(stage, False):
            return contextlib.nullcontext()
        return torch.autocast(dev_type, dtype=autocast_dtype)

    video_dir: Path | None = None
    if options.save_videos:
        video_dir = Path(options.save_videos)
        if options.video_subdir:
            video_dir = video_dir / options.video_subdir

    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False
    mem = PeakMemory(device)
    mem.start()
    total = StageTimer(device)
    warm_clips = 1 if len(todo) > 1 else 0
    results: list[ClipResult] = []
    frames_counted = 0
    wall_counted = 0.0
    io_busy = 0.0

    loader = _ClipLoader(todo, ds_hash=spec["dataset"]["content_hash"], device=device)
    emit("shard_start", cell=cid, shard=shard, clips=len(todo))
    try:
        for k, (index, sample) in enumerate(todo):
            timer = StageTimer(device)
            t0 = time.perf_counter()
            try:
                clip, busy = _run_clip(
                    index, sample, loader, k, spec, role, driver, renderer, posts, metrics,
                    timer, autocast, device, video_dir,
                )
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                if options.strict:
                    raise
                for m in metrics.values():
                    m.reset()
                err = f"{type(exc).__name__}: {exc}"
                tb = traceback.format_exc(limit=3)
                clip = ClipResult(index, sample.uuid, int(getattr(sample, "n_frames", 0)), {}, {},
                                  error=f"{err}\n{tb}")
                busy = 0.0
            clip.wall = time.perf_counter() - t0
            clip.seconds = dict(timer.seconds)
            results.append(clip)
            if on_clip is not None:
                on_clip(clip)
            if k >= warm_clips and clip.error is None:
                for s, v in timer.seconds.items():
                    total.seconds[s] = total.seconds.get(s, 0.0) + v
                frames_counted += clip.n_frames
                wall_counted += clip.wall
                io_busy += busy
            emit("clip_done", cell=cid, uuid=sample.uuid, frames=clip.n_frames,
                 seconds=clip.wall, error=clip.error)
    finally:
        loader.close()
    if frames_counted == 0:  # a single clip (or all warm-up): report it rather than nothing
        for clip in results:
            if clip.error is None:
                for s, v in clip.seconds.items():
                    total.seconds[s] = total.seconds.get(s, 0.0) + v
                frames_counted += clip.n_frames
                wall_counted += clip.wall
        warm_clips = 0
    return ShardResult(
        cell_id=cid, shard=shard, n_shards=n_shards, clips=results,
        stage_seconds=total.seconds, io_busy=io_busy, frames=frames_counted, wall=wall_counted,
        warmup_clips=warm_clips, peak_host_bytes=mem.host_bytes(),
        peak_device_bytes=mem.device_bytes(), device=_device_name(device), metric_info=metric_info,
    )


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({torch.get_num_threads()} threads)"


class _ClipLoader:
    """Loads clip-level inputs (audio features, reference, coefficients) one clip ahead."""

    def __init__(self, todo: Sequence[tuple[int, Sample]], *, ds_hash: str, device: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._todo = todo
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-clip-loader")
        self._futures: dict[int, Any] = {}
        self.ds_hash = ds_hash

    def _load(self, sample: Sample) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        data = {
            "audio": sample.audio_features(),
            "reference": sample.reference_image(),
            "gt_coeffs": sample.gt_coeffs(),
            "speaker": sample.speaker_coeffs() if sample.task == "listening" else None,
        }
        return data, time.perf_counter() - t0

    def get(self, k: int) -> tuple[dict[str, Any], float]:
        fut = self._futures.pop(k, None)
        if fut is None:
            fut = self._pool.submit(self._load, self._todo[k][1])
        if k + 1 < len(self._todo) and k + 1 not in self._futures:
            self._futures[k + 1] = self._pool.submit(self._load, self._todo[k + 1][1])
        return fut.result()

    def close(self) -> None:
        for fut in self._futures.values():
            fut.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _run_clip(
    index: int, sample: Sample, loader: _ClipLoader, k: int, spec: Mapping[str, Any], role: str,
    driver: Any, renderer: Any, posts: Sequence[Any], metrics: Mapping[str, Any],
    timer: StageTimer, autocast: Callable[[str], Any], device: str, video_dir: Path | None,
) -> tuple[ClipResult, float]:
    """Stream one clip; returns its result and background I/O busy seconds."""
    import torch

    from .contracts import DriverBatch

    seed_everything(clip_seed(spec["seed"], sample.uuid))
    batch_size = int(spec["batch_size"])
    with timer.stage("io"):
        data, load_busy = loader.get(k)
    audio: torch.Tensor = data["audio"].float()
    reference: torch.Tensor = data["reference"].float()
    gt_coeffs: torch.Tensor | None = data["gt_coeffs"]
    speaker: torch.Tensor | None = data["speaker"]
    n_frames = int(sample.n_frames)
    if gt_coeffs is None:
        raise ClipFailure(f"clip {sample.uuid}: no ground-truth coefficients (needed for the first frame)")
    gt_coeffs = gt_coeffs.float()

    for m in metrics.values():
        m.reset()
    gt_stream = _Prefetch(lambda: sample.gt_frames(batch_size), depth=2)
    writer = None
    if video_dir is not None:
        writer = _BackgroundWriter(video_dir / f"{sample.uuid}.{role}.mp4", float(sample.fps))
    try:
        with torch.inference_mode():
            batch = DriverBatch(
                audio=audio[None].to(device),
                init=gt_coeffs[0][None].to(device),
                speaker=None if speaker is None else speaker.float()[None].to(device),
                attitude=[getattr(sample, "attitude", None)],
                gt=gt_coeffs[None].to(device),
                uuids=[sample.uuid],
            )
            with timer.stage("driver"), autocast("driver"):
                coeffs = driver.predict(batch)
            coeffs = coeffs[0].float()
            if coeffs.shape[0] < n_frames:
                raise ClipFailure(f"driver produced {coeffs.shape[0]} frames, the clip has {n_frames}")
            coeffs = coeffs[:n_frames]
            if not torch.isfinite(coeffs).all():
                raise ClipFailure("driver output has NaN/inf coefficients")
            ref_dev = reference.to(device)
            for p in posts:
                p.start_clip(ref_dev)
            frame_metrics = {n: m for n, m in metrics.items() if getattr(m, "frame_level", True)}
            clip_metrics = {n: m for n, m in metrics.items() if not getattr(m, "frame_level", True)}
            kwargs_of = {n: _update_kwargs(m) for n, m in metrics.items()}
            gt = _Rebatcher(gt_stream)
            produced = 0
            # Renderers that read per-clip data (the `videos` renderer) take the sample.
            render_kw = {"sample": sample} if _takes_sample(renderer) else {}
            stream = renderer.render(ref_dev, coeffs, source_coeffs=gt_coeffs[0].to(device), **render_kw)

            def generated() -> Iterator[torch.Tensor]:
                """Post-processed frames in the renderer's batches."""
                start = 0
                while True:
                    with timer.stage("render"), autocast("render"):
                        frames = next(stream, None)
                    if frames is None:
                        return
                    frames = frames.float()
                    if posts:
                        with timer.stage("postproc"), autocast("postproc"):
                            for p in posts:
                                frames = p.process(frames)
                        frames = frames.float()
                    if not torch.isfinite(frames).all():
                        raise ClipFailure(f"NaN/inf in generated frames {start}..{start + frames.shape[0]}")
                    start += int(frames.shape[0])
                    yield frames

            # Metrics see fixed, aligned chunks of `batch_size` frames whatever the
            # renderer's batch: GT-side caches keyed by frame range then hit across cells.
            for frames in rechunk(generated(), batch_size):
                b = int(frames.shape[0])
                with timer.stage("io"):
                    gt_frames = gt.take(b)
                    if gt_frames is None:
                        raise ClipFailure(f"generated more frames than the ground truth ({produced + b} > "
                                          f"{produced + gt._have})")
                    gt_frames = gt_frames.to(device)
                    if writer is not None:
                        writer.write(frames)
                key = gt_key(loader.ds_hash, sample.uuid, role, produced, produced + b)
                with timer.stage("metrics"):
                    for name, m in frame_metrics.items():
                        inputs, takes_key = kwargs_of[name]
                        avail = {"frames": frames, "gt_frames": gt_frames, "reference": ref_dev,
                                 "coeffs": coeffs, "gt_coeffs": gt_coeffs, "audio": audio}
                        kw = {i: avail[i] for i in inputs if i in avail}
                        if takes_key:
                            kw["gt_key"] = key
                        timer.call(f"metrics.{name}", m.update, **kw)
                produced += b
            extra = gt.leftover()
            if produced == 0:
                raise ClipFailure("the renderer produced no frames")
            if extra:
                raise ClipFailure(f"generated {produced} frames, the ground truth has {produced + extra}")
            with timer.stage("metrics"):
                for name, m in clip_metrics.items():
                    inputs, takes_key = kwargs_of[name]
                    avail = {"coeffs": coeffs.cpu(), "gt_coeffs": gt_coeffs, "reference": reference,
                             "audio": audio}
                    missing = inputs - set(avail)
                    if missing:
                        raise ClipFailure(f"metric {name!r} needs {sorted(missing)} once per clip")
                    kw = {i: avail[i] for i in inputs}
                    if takes_key:
                        kw["gt_key"] = gt_key(loader.ds_hash, sample.uuid, role)
                    timer.call(f"metrics.{name}", m.update, **kw)
        if writer is not None:
            with timer.stage("io"):
                writer.close()
            writer_busy = writer.busy
            writer = None
        else:
            writer_busy = 0.0
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        gt_stream.close()
    states: dict[str, dict[str, Any]] = {}
    values: dict[str, float] = {}
    for name, m in metrics.items():
        states[name] = m.stored_state()  # consumers restore_state() it
        if not _per_clip_values(name, m):
            continue
        try:
            vals = m.compute_state(m.state())
        except Exception:  # e.g. FID of one clip may be undefined; the pooled value still is
            vals = {}
        for kname, v in vals.items():
            values[kname] = float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else float("nan")
    return ClipResult(index, sample.uuid, produced, states, values), gt_stream.busy + load_busy + writer_busy


# --------------------------------------------------------------------------- work items and executors
def run_work_item(item: WorkItem) -> dict[str, Any]:
    """Executor entry point: run one shard of a cell and write it to the store.

    Module-level and driven only by the picklable payload, so Slurm (submitit)
    and Ray workers can run it in another process.
    """
    from .store import Store

    payload = item.payload
    plugin_args = tuple(payload.get("plugin_args") or ())
    if plugin_args:
        import bench.plugins

        if bench.plugins.session().plugin_args != plugin_args:
            bench.plugins.configure(plugin_args)
    options = RunOptions(**payload.get("options", {}))
    store = Store(payload["store"])
    try:
        # Clips are saved one by one as they finish (invisible until the cell is
        # finished), so a killed shard resumes at its first missing clip.
        done = store.done_clips(item.cell_id, item.n_shards, item.shard)
        res = run_shard(payload["cell"], item.shard, item.n_shards, options,
                        on_event=payload.get("on_event"), skip=done,
                        on_clip=lambda clip: store.write_clip(item.cell_id, item.n_shards, item.shard, clip))
        store.write_shard(res, run_id=payload.get("run_id"))
    finally:
        store.close()
    return {"cell_id": res.cell_id, "shard": res.shard, "clips": len(res.clips),
            "failed": sum(c.error is not None for c in res.clips)}


def get_executor(name: str = "local", **options: Any) -> Any:
    import bench

    return bench.load("executor", name, **options)


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # "skipped" | "finished"
    summary: Any = None


def run_plan(
    plan_: Plan,
    store: Store | str | Path,
    *,
    executor: Any = None,
    n_shards: int = 1,
    force: bool = False,
    options: RunOptions | None = None,
    on_event: EventCallback | None = None,
    n_resamples: int | None = None,
    argv: Sequence[str] = (),
) -> list[CellOutcome]:
    """Run every unfinished cell of a plan (shard by shard) and summarise each."""
    from .store import Store, run_environment

    options = options or RunOptions()
    st = store if isinstance(store, Store) else Store(store)
    own = st is not store
    emit = on_event or (lambda *a, **k: None)
    outcomes: list[CellOutcome] = []
    try:
        for cell in plan_.cells:
            st.add_cell(cell.id, cell.spec, cell.label)
        todo = []
        for cell in plan_.cells:
            if not force and st.cell_finished(cell.id):
                outcomes.append(CellOutcome(cell, "skipped", st.summary(cell.id)))
                emit("cell_skipped", cell=cell.id, label=cell.label)
            else:
                todo.append(cell)
        if not todo:
            return outcomes
        executor = executor if executor is not None else get_executor("local")
        device = resolve_device(options.device)
        run_id = st.start_run(run_environment(device, argv))
        status = "interrupted"
        try:
            for cell in todo:
                emit("cell_start", cell=cell.id, label=cell.label)
                st.prepare_cell(cell.id, n_shards, force=force)
                done = st.finished_shards(cell.id, n_shards)
                sub = None
                if options.save_videos and len(plan_.cells) > 1:
                    sub = cell.label.replace(" | ", "__").replace("/", "_").replace(":", "_")
                item_opts = {"device": options.device, "save_videos": options.save_videos,
                             "strict": options.strict, "video_subdir": sub}
                import bench.plugins

                items = [
                    WorkItem(cell.id, s, n_shards, {
                        "cell": cell.payload(), "store": str(st.path), "run_id": run_id,
                        "options": item_opts, "plugin_args": list(bench.plugins.session().plugin_args),
                        **({"on_event": on_event} if getattr(executor, "in_process", False) else {}),
                    })
                    for s in range(n_shards) if s not in done
                ]
                if items:
                    executor.map(run_work_item, items)
                summary = st.finish_cell(cell.id, n_shards, metrics=plan_.metric_instances,
                                         n_resamples=n_resamples, seed=cell.spec["seed"], run_id=run_id)
                outcomes.append(CellOutcome(cell, "finished", summary))
                emit("cell_done", cell=cell.id, label=cell.label)
            status = "finished"
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            raise
        finally:
            st.end_run(run_id, status)
    finally:
        if own:
            st.close()
    return outcomes


def default_workers() -> int:
    """One worker per visible GPU, else one."""
    try:
        import torch

        return max(1, torch.cuda.device_count())
    except ImportError:  # pragma: no cover
        return 1


__all__ = [
    "CHALLENGE_METRICS",
    "STAGES",
    "Cell",
    "CellOutcome",
    "Plan",
    "RunOptions",
    "ShardResult",
    "canonical_json",
    "cell_id",
    "clip_seed",
    "open_dataset",
    "parse_chain",
    "plan",
    "register_dataset",
    "run_plan",
    "run_shard",
    "run_work_item",
]

