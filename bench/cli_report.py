"""``bench report`` (static HTML site) and ``bench gate`` (CI regression gate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

STORE_HELP = "Results store (SQLite) written by `bench run` / `bench eval`."


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("gate")(gate)


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the site into.")] = Path("reports/site"),
    store: Annotated[Path, typer.Option("--store", help=STORE_HELP)] = Path("bench-results.db"),
    ablation: Annotated[
        list[Path] | None,
        typer.Option("--ablation", "-a", help="Ablation grid TOML (repeatable); default: "
                     "reports/ablations/*.toml when that folder exists."),
    ] = None,
    videos: Annotated[
        Path | None,
        typer.Option("--videos", help="Folder of generated videos ({uuid}.{role}.mp4, as written by "
                     "`bench run --save-videos`) for GT / generated / difference sample strips."),
    ] = None,
    strips: Annotated[int, typer.Option(help="Number of clips shown as sample strips.")] = 3,
) -> None:
    """Write leaderboards, ablation pages, plots and provenance as a self-contained site."""
    from rich.console import Console

    from .report.ablation import build_ablations, default_ablation_files
    from .report.results import load_cells, load_clip_values, provenance_lines
    from .report.site import SiteData, build_site
    from .report.strips import strips_for_boards

    cells = load_cells(store)
    files = list(ablation) if ablation else default_ablation_files()
    data = SiteData(
        cells=cells,
        clip_values=load_clip_values(store),
        ablations=build_ablations(files, cells, store),
        strips=strips_for_boards(cells, videos, strips) if videos else {},
        provenance=provenance_lines(cells, {"store": store.resolve()}),
    )
    pages = build_site(data, out)
    console = Console()
    console.print(f"wrote {len(pages)} page(s) for {len(cells)} cell(s): {pages[0]}")
    for page in pages[1:]:
        console.print(f"  {page}")


def gate(
    baseline: Annotated[Path, typer.Option(help="Baseline JSON committed with the code.")] = Path("reports/baseline.json"),
    store: Annotated[Path, typer.Option("--store", help=STORE_HELP)] = Path("bench-results.db"),
    cell: Annotated[str | None, typer.Option("--cell", help="Only baseline cells whose label contains this.")] = None,
    tolerance: Annotated[
        list[str] | None,
        typer.Option("--tolerance", "-t", help="NAME=VALUE, absolute (psnr=0.1) or relative "
                     "(fid=2%); repeatable. Defaults: psnr 0.05, ssim 0.002, fid/lmd/FDs 2%, other 1%."),
    ] = None,
    require_ci: Annotated[bool, typer.Option(help="Fail a metric only when its bootstrap CI also "
                                             "excludes the baseline value.")] = False,
    throughput_ratio: Annotated[float, typer.Option(help="Fail when frames/s falls below this "
                                                    "fraction of the baseline's (0 disables).")] = 0.5,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write a Markdown summary here.")] = None,
    update_baseline: Annotated[bool, typer.Option("--update-baseline", help="Write the baseline "
                                                  "from the current store instead of gating.")] = False,
) -> None:
    """Compare the store with a baseline. Exit 0 pass, 1 regression, 2 usage error or missing data."""
    import json

    from rich.console import Console
    from rich.table import Table

    from .gate import (
        baseline_from_cells,
        evaluate,
        parse_tolerances,
        read_baseline,
        to_junit,
        to_markdown,
    )
    from .report.results import load_cells

    console = Console()
    cells = load_cells(store)
    if update_baseline:
        chosen = [c for c in cells if cell is None or cell in c.label]
        if not chosen:
            console.print(f"[red]no finished cells{f' matching {cell!r}' if cell else ''} in {store}[/]")
            raise typer.Exit(2)
        baseline.parent.mkdir(parents=True, exist_ok=True)
        baseline.write_text(json.dumps(baseline_from_cells(chosen), indent=2, sort_keys=True) + "\n")
        console.print(f"wrote baseline for {len(chosen)} cell(s) to {baseline}")
        return
    result = evaluate(cells, read_baseline(baseline), parse_tolerances(tolerance or []),
                      cell_filter=cell, require_ci=require_ci,
                      throughput_ratio=throughput_ratio or None)
    table = Table(title=f"bench gate against {baseline}")
    for col in ("cell", "metric", "baseline", "current", "delta", "tolerance", "status", "note"):
        table.add_column(col, overflow="fold")
    colour = {"regression": "red", "missing": "yellow", "improved": "green", "pass": ""}
    for r in result.rows:
        style = colour[r.status]
        table.add_row(r.cell, r.metric, _fmt(r.baseline), _fmt(r.current), _fmt(r.delta), r.allowed,
                      f"[{style}]{r.status}[/]" if style else r.status, r.note)
    console.print(table)
    for r in result.regressions + result.missing:  # one plain, greppable line each (CI logs)
        console.print(f"{r.status.upper()}: {r.metric} in {r.cell}: baseline {_fmt(r.baseline)} -> "
                      f"current {_fmt(r.current)} (tolerance {r.allowed}) {r.note}".rstrip(),
                      soft_wrap=True, highlight=False, markup=False)
    if junit:
        junit.write_text(to_junit(result))
    if markdown:
        markdown.write_text(to_markdown(result))
    verdict = {0: "[green]PASS[/]", 1: "[red]FAIL: regression[/]", 2: "[yellow]FAIL: missing data[/]"}
    console.print(verdict[result.exit_code])
    raise typer.Exit(result.exit_code)
