"""``bench eval``: score a folder of pre-generated videos as the official evaluation does.

Nothing heavy is imported at module import: torch loads inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_videos)


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    x = float(x)
    return f"{x:.{digits}g}" if abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-3) else f"{x:.{digits}f}"


def eval_videos(
    pred: Annotated[Path, typer.Option(help="Folder of {uuid}.{role}.mp4 generated videos.")],
    gt: Annotated[Path, typer.Option(help="Ground truth: a ViCo root (videos/) or a folder of mp4s.")],
    task: Annotated[str, typer.Option(help="talking | listening")],
    split_csv: Annotated[Path | None, typer.Option(help="Split CSV (uuid column) naming the clips to score.")] = None,
    name: Annotated[str | None, typer.Option(help="Method name in the results store [default: pred folder name].")] = None,
    metrics: Annotated[str | None, typer.Option(help="Comma-separated metrics [default: the challenge set].")] = None,
    decoder: Annotated[str, typer.Option(help="opencv (as the official scripts) | pyav")] = "opencv",
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Score the valid pairs when some are bad.")] = False,
    store: Annotated[Path, typer.Option(help="Results store.")] = Path("bench-results.db"),
    batch_size: Annotated[int, typer.Option(help="Frames per batch (decode and metrics).")] = 16,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    bootstrap: Annotated[int | None, typer.Option(help="Bootstrap resamples for CIs (0: none) [default: each metric's own].")] = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Print only; write nothing to the store.")] = False,
) -> None:
    """Score generated videos against the ground truth and store the result as a cell."""
    from rich.console import Console
    from rich.table import Table

    from .evaluate import evaluate_videos, pair_videos

    console = Console()
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    pairing = pair_videos(pred, gt, task, split_csv)
    if pairing.fatal and not allow_partial:
        # plain text, no wrapping: every offending path stays whole and greppable
        sys.stderr.write(pairing.report() + "\nfix: correct the files listed, or pass --allow-partial "
                         "to score the valid pairs only\n")
        raise typer.Exit(2)
    if pairing.problems:
        console.print(f"{len(pairing.fatal)} problem(s), {len(pairing.warnings)} warning(s):", markup=False)
        for p in pairing.problems:
            console.print(f"  - {'' if p.fatal else 'warning: '}{p}", highlight=False, markup=False)
        if pairing.fatal:
            console.print(f"--allow-partial: scoring the {len(pairing.pairs)} valid pair(s) only", markup=False)
    res = evaluate_videos(pred, gt, task, split_csv=split_csv, name=name, metrics=metric_names,
                          decoder=decoder, allow_partial=allow_partial, store=None if no_store else store,
                          batch_size=batch_size, device=device, n_resamples=bootstrap, pairing=pairing)
    method = res.spec["driver"]["name"]  # type: ignore[index]
    table = Table(title=f"{method} ({task}, {res.n_clips} clips, {res.frames} frames, decoder {decoder})"
                        f"  [dim]cell {res.cell_id}[/]", title_justify="left")
    for col in ("metric", "value", "95% CI", "better"):
        table.add_column(col, justify="left" if col == "metric" else "right", no_wrap=True)
    for key, value in res.values.items():
        low, high = res.cis.get(key, (None, None))
        direction = res.directions.get(key)
        label = res.labels.get(key, "")
        table.add_row(key + (f" ({label})" if label else ""), _fmt(value),
                      "-" if low is None else f"[{_fmt(low)}, {_fmt(high)}]",
                      "-" if direction is None else ("higher" if direction else "lower"))
    console.print(table)
    for note in res.skipped:
        console.print(f"skipped: {note}", highlight=False, markup=False)
    for uuid, error in res.clip_errors.items():
        console.print(f"failed clip {uuid}: {error}", highlight=False, markup=False)
    console.print(f"{res.frames} frames in {res.seconds:.1f} s ({res.fps:.1f} frames/s)"
                  + (f"; stored in {store}" if res.stored else ""), markup=False)
