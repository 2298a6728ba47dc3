"""``bench run`` (a grid of cells through the harness) and ``bench export``.

Nothing heavy is imported at module import: torch loads inside the commands.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import ConfigError, InputError

DEFAULTS: dict[str, Any] = {
    "dataset": "vico-mini",
    "split": "test",
    "task": "talking",
    "renderer": "rig",
    "postproc": "none",
    "device": "auto",
    "precision": "fp32",
    "batch_size": 16,
    "seed": 0,
    "store": "bench-results.db",
    "executor": "local",
    "shards": 1,
    "bootstrap": None,
}


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("export")(export)


def _split_list(value: str | Sequence[str] | None) -> list[str] | None:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]``."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    out = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    return out or None


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_component_options(items: Sequence[str] | None, what: str) -> dict[str, dict[str, Any]]:
    """``["lmd.backend=dlib", "fid.batch=64"]`` -> ``{"lmd": {"backend": "dlib"}, ...}``.

    Values are JSON when they parse as JSON (numbers, true/false), else strings.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items or ():
        name_key, sep, value = item.partition("=")
        name, dot, key = name_key.partition(".")
        if not sep or not dot or not name or not key:
            raise ConfigError(f"--{what}-opt {item!r} is not NAME.KEY=VALUE",
                              fix=f"e.g. --{what}-opt {'lmd.backend=dlib' if what == 'metric' else 'NAME.option=1'}")
        out.setdefault(name, {})[key] = _parse_value(value)
    return out


def _parse_kv(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--{what} {item!r} is not KEY=VALUE")
        out[key] = _parse_value(value)
    return out


def load_grids(path: Path, names: Sequence[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Read named grids from a TOML file (``[grids.NAME]`` tables).

    A grid has the ``bench run`` options as keys (``dataset``, ``task``,
    ``driver``/``drivers``, ``renderer``/``renderers``, ``postproc``/``postprocs``,
    ``metrics``, ``seed``, ...), optional ``options.{driver,renderer,postproc,metric}.NAME``
    tables, and optionally ``cells = [{driver=, renderer=, postproc=}, ...]`` listing
    cells explicitly instead of a cartesian product.
    """
    import tomllib

    if not path.is_file():
        raise InputError(path, "grid file not found")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML ({exc})") from exc
    grids = doc.get("grids")
    if not isinstance(grids, dict) or not grids:
        raise InputError(path, "no [grids.NAME] tables", fix="see reports/grids/*.toml for the format")
    wanted = list(names) if names else list(grids)
    unknown = [n for n in wanted if n not in grids]
    if unknown:
        raise ConfigError(f"{path}: no grid named {', '.join(unknown)} (it has: {', '.join(grids)})")
    return [(n, dict(grids[n])) for n in wanted]


def _pick(cli: Any, grid: Mapping[str, Any], *keys: str) -> Any:
    if cli is not None:
        return cli
    for k in keys:
        if k in grid:
            return grid[k]
    return DEFAULTS.get(keys[0])


def run(
    driver: Annotated[str | None, typer.Option(help="Driver(s), comma separated: a grid axis.")] = None,
    renderer: Annotated[str | None, typer.Option(help="Renderer(s), comma separated [default: rig].")] = None,
    postproc: Annotated[str | None, typer.Option(
        help="Post-processing chain(s): 'a+b' applies a then b; comma separates grid values; "
             "'none' for no post-processing [default: none].")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name or folder [default: vico-mini].")] = None,
    split: Annotated[str | None, typer.Option(help="Split [default: test].")] = None,
    task: Annotated[str | None, typer.Option(help="talking | listening [default: talking].")] = None,
    metrics: Annotated[str | None, typer.Option(
        help="Metrics, comma separated [default: the challenge set available for the task].")] = None,
    metric_opt: Annotated[list[str] | None, typer.Option(
        "--metric-opt", help="Metric backend option NAME.KEY=VALUE, e.g. lmd.backend=dlib (repeatable).")] = None,
    driver_opt: Annotated[list[str] | None, typer.Option("--driver-opt", help="NAME.KEY=VALUE (repeatable).")] = None,
    renderer_opt: Annotated[list[str] | None, typer.Option("--renderer-opt", help="NAME.KEY=VALUE (repeatable).")] = None,
    postproc_opt: Annotated[list[str] | None, typer.Option("--postproc-opt", help="NAME.KEY=VALUE (repeatable).")] = None,
    renderer_weights: Annotated[Path | None, typer.Option(help="Weights file passed to the renderer as option 'weights'.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Frames per batch (GT decode, metrics) [default: 16].")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 | bf16 | fp16 [default: fp32].")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N [default: auto].")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N clips of the split.")] = None,
    save_videos: Annotated[Path | None, typer.Option(
        help="Write generated videos here in submission layout ({uuid}.speaker.mp4 / {uuid}.listener.mp4); "
             "a grid writes one sub-folder per cell.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (per clip: derived from this and the uuid) [default: 0].")] = None,
    store: Annotated[Path | None, typer.Option(help="Results store [default: ./bench-results.db].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun cells that are already finished.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first failing clip.")] = False,
    executor: Annotated[str | None, typer.Option(help="local | submitit | ray [default: local].")] = None,
    executor_opt: Annotated[list[str] | None, typer.Option("--executor-opt", help="KEY=VALUE for the executor (repeatable).")] = None,
    shards: Annotated[int | None, typer.Option(help="Split each cell into N shards of clips [default: 1].")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file of named grids ([grids.NAME]).")] = None,
    grid: Annotated[list[str] | None, typer.Option(help="Grid name(s) in --config [default: all].")] = None,
    bootstrap: Annotated[int | None, typer.Option(help="Bootstrap resamples for CIs (0: none) [default: each metric's own, usually 1000; FID 100].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress display.")] = False,
) -> None:
    """Run driver x renderer x post-processor cells over a dataset split and store every number.

    Finished cells (same spec hash) are skipped; use --force to rerun them.
    """
    from rich.console import Console

    console = Console()
    if config is not None:
        grids = load_grids(config, grid)
    else:
        if grid:
            raise ConfigError("--grid needs --config FILE")
        grids = [("cli", {})]

    store_path = Path(_pick(store, {}, "store"))
    all_outcomes: list[Any] = []
    for gname, g in grids:
        opts = g.get("options", {})
        drivers = _split_list(driver) or _split_list(g.get("drivers") or g.get("driver"))
        cells = g.get("cells")
        if not drivers and not cells:
            raise ConfigError("no driver given", fix="pass --driver NAME (e.g. --driver static) or --config FILE")
        renderers = _split_list(renderer) or _split_list(g.get("renderers") or g.get("renderer")) or [DEFAULTS["renderer"]]
        postprocs = _split_list(postproc) or _split_list(g.get("postprocs") or g.get("postproc")) or [DEFAULTS["postproc"]]
        metric_names = _split_list(metrics) or _split_list(g.get("metrics"))

        def merged(kind: str, cli_items: Sequence[str] | None,
                   opts: Mapping[str, Any] = opts) -> dict[str, dict[str, Any]]:
            base = {k: dict(v) for k, v in dict(opts.get(kind, {})).items()}
            for name, kv in parse_component_options(cli_items, kind).items():
                base.setdefault(name, {}).update(kv)
            return base

        if cells is not None and (driver or renderer or postproc):
            raise ConfigError(f"grid {gname!r} lists explicit cells; --driver/--renderer/--postproc "
                              "cannot be combined with it")
        if cells is not None:  # a cell inherits the grid's renderer and chain unless it names its own
            cells = [{"renderer": renderers[0], "postproc": postprocs[0], **c} for c in cells]
        if config is not None:
            console.print(f"[bold]grid[/] {gname}")
        outcomes = _run_grid(
            console,
            dataset=_pick(dataset, g, "dataset"), split=_pick(split, g, "split"), task=_pick(task, g, "task"),
            drivers=drivers or [], renderers=renderers, postprocs=postprocs, metrics=metric_names,
            cells=cells,
            driver_options=merged("driver", driver_opt), renderer_options=merged("renderer", renderer_opt),
            postproc_options=merged("postproc", postproc_opt), metric_options=merged("metric", metric_opt),
            renderer_weights=renderer_weights or g.get("renderer_weights"),
            batch_size=int(_pick(batch_size, g, "batch_size")), precision=_pick(precision, g, "precision"),
            device=_pick(device, g, "device"), limit=_pick(limit, g, "limit"),
            save_videos=save_videos or g.get("save_videos"), seed=int(_pick(seed, g, "seed")),
            store=store_path, force=force, strict=strict, executor=_pick(executor, g, "executor"),
            executor_options={**dict(g.get("executor_options", {})), **_parse_kv(executor_opt, "executor-opt")},
            shards=int(_pick(shards, g, "shards")), bootstrap=_pick(bootstrap, g, "bootstrap"),
            quiet=quiet,
        )
        all_outcomes.extend(outcomes)


def _run_grid(console: Any, *, store: Path, device: str, save_videos: Any, force: bool, strict: bool,
              executor: str, executor_options: dict[str, Any], shards: int, bootstrap: int | None,
              quiet: bool,
              **plan_args: Any) -> list[Any]:
    from . import harness

    if shards < 1:
        raise ConfigError(f"--shards must be >= 1, got {shards}")
    harness.resolve_device(device)
    the_plan = harness.plan(device=device, **plan_args)
    if the_plan.skipped_metrics:
        console.print(f"[yellow]metrics skipped:[/] {', '.join(the_plan.skipped_metrics)}")
    ex = harness.get_executor(executor, **executor_options)
    options = harness.RunOptions(device=device, save_videos=str(save_videos) if save_videos else None,
                                 strict=strict)
    progress: Any = None
    if not quiet:
        progress = (_Progress(console, len(the_plan.cells)) if console.is_terminal
                    else _LineProgress(console, len(the_plan.cells)))
    try:
        if progress is not None:
            progress.start()
        outcomes = harness.run_plan(the_plan, store, executor=ex, n_shards=shards, force=force,
                                    options=options, on_event=progress.event if progress else None,
                                    n_resamples=bootstrap, argv=sys.argv)
    finally:
        if progress is not None:
            progress.stop()
    for outcome in outcomes:
        print_cell(console, outcome)
    return outcomes


class _Progress:
    """Live display: cells done, clips of the current cell, frames/s."""

    def __init__(self, console: Any, n_cells: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                          transient=True)
        self.cells = self.p.add_task("cells", total=n_cells, info="")
        self.clips: Any = None
        self.frames = 0
        self.seconds = 0.0

    def start(self) -> None:
        self.p.start()

    def stop(self) -> None:
        self.p.stop()

    def event(self, kind: str, **info: Any) -> None:
        if kind in ("cell_done", "cell_skipped"):
            self.p.advance(self.cells)
            if kind == "cell_skipped":
                self.p.console.print(f"[dim]skipped (finished): {info.get('label')}[/]")
        elif kind == "cell_start":
            self.p.update(self.cells, info=info.get("label", ""))
        elif kind == "shard_start":
            if self.clips is not None:
                self.p.remove_task(self.clips)
            self.clips = self.p.add_task("clips", total=info.get("clips", 0), info="")
            self.frames, self.seconds = 0, 0.0
        elif kind == "clip_done" and self.clips is not None:
            self.frames += int(info.get("frames", 0))
            self.seconds += float(info.get("seconds", 0.0))
            fps = self.frames / self.seconds if self.seconds else 0.0
            self.p.update(self.clips, advance=1, info=f"{fps:.1f} frames/s")


class _LineProgress:
    """Plain progress lines when the output is not a terminal (CI logs, pipes)."""

    def __init__(self, console: Any, n_cells: int) -> None:
        self.console, self.n_cells, self.done = console, n_cells, 0
        self.clips, self.clip = 0, 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def event(self, kind: str, **info: Any) -> None:
        say = self.console.print
        if kind == "cell_start":
            say(f"cell {self.done + 1}/{self.n_cells}: {info.get('label', '')}", markup=False,
                highlight=False, soft_wrap=True)
        elif kind in ("cell_done", "cell_skipped"):
            self.done += 1
            if kind == "cell_skipped":
                say(f"skipped (finished): {info.get('label')}", markup=False, highlight=False, soft_wrap=True)
        elif kind == "shard_start":
            self.clips, self.clip = int(info.get("clips", 0)), 0
        elif kind == "clip_done":
            self.clip += 1
            frames, seconds = int(info.get("frames", 0)), float(info.get("seconds", 0.0))
            fps = f", {frames / seconds:.1f} frames/s" if seconds else ""
            say(f"  clip {self.clip}/{self.clips}: {frames} frames{fps}", markup=False, highlight=False)


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-3) else f"{x:.{digits}f}"
    return str(x)


def print_cell(console: Any, outcome: Any) -> None:
    """The cell's metrics with CIs, and its throughput, as tables."""
    from rich.table import Table

    summary = outcome.summary or {}
    status = "[dim](finished earlier: skipped)[/]" if outcome.status == "skipped" else ""
    table = Table(title=f"{outcome.cell.label}  [dim]cell {outcome.cell.id}[/] {status}", title_justify="left")
    table.add_column("metric", no_wrap=True, overflow="ellipsis", max_width=26)
    table.add_column("value", justify="right", no_wrap=True, min_width=7)
    table.add_column("95% CI", justify="right", no_wrap=True, min_width=18)
    for col in ("clips", "failed"):
        table.add_column(col, justify="right", no_wrap=True)
    # backends are long provenance strings: the full text is in the store
    table.add_column("backend", no_wrap=True, overflow="ellipsis", max_width=24)
    for m in summary.get("metrics", []):
        ci = "-" if m["ci_low"] is None else f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
        hib = m["higher_is_better"]
        arrow = "" if hib is None else ("↑" if hib else "↓")  # which way is better
        table.add_row(f"{m['key']} {arrow}".strip() + (f" ({m['label']})" if m.get("label") else ""),
                      _fmt(m["value"]), ci, str(m["n_clips"]), str(m["n_failed"]), m["backend"] or "")
    console.print(table)
    tp = summary.get("throughput", [])
    if tp:
        t2 = Table(title="throughput (warm-up clip excluded)", title_justify="left")
        for col in ("stage", "seconds", "frames", "frames/s"):
            t2.add_column(col, justify="right" if col != "stage" else "left")
        for row in tp:
            t2.add_row(row["stage"], _fmt(row["seconds"], 3), str(row["frames"]), _fmt(row["fps"], 3))
        console.print(t2)
    host = summary.get("peak_host_bytes")
    dev = summary.get("peak_device_bytes")
    if host:
        console.print(f"peak memory: host {host / 2**20:.0f} MiB" +
                      (f", device {dev / 2**20:.0f} MiB" if dev else ""))


def export(
    out: Annotated[Path, typer.Option(help="csv/parquet: a folder (one file per table); json: a file.")],
    format: Annotated[str, typer.Option("--format", help="csv | parquet | json")] = "csv",
    store: Annotated[Path, typer.Option(help="Results store.")] = Path("bench-results.db"),
) -> None:
    """Export the results store (cells, summaries, per-clip rows, throughput, runs)."""
    from .store import export as _export

    for path in _export(store, out, format):
        typer.echo(str(path))
