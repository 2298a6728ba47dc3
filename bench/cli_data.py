"""`bench data`: validate a ViCo folder, compute its statistics, generate vico-mini."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(help="ViCo data: check a folder, compute mean/std, generate vico-mini.",
                       no_args_is_help=True)


@data_app.command("check")
def check(
    root: Annotated[Path, typer.Argument(help="A ViCo-layout folder.")],
) -> None:
    """List every problem in a ViCo-layout folder; exit 0 if clean, 1 otherwise."""
    from .data.check import check_dataset

    report = check_dataset(root)
    for split, n in report.clips.items():
        typer.echo(f"{split}: {report.good.get(split, 0)}/{n} clips OK")
    for problem in report.problems:
        typer.echo(f"PROBLEM {problem}", err=True)
    if report.ok:
        typer.echo(f"{root}: OK")
        return
    typer.echo(f"{root}: {len(report.problems)} problem(s)", err=True)
    # SystemExit, not typer.Exit: bench.cli.main runs click with standalone_mode=False,
    # which turns typer.Exit into a return value that main() does not pass on
    sys.exit(1)


@data_app.command("stats")
def stats(
    root: Annotated[Path, typer.Argument(help="A ViCo-layout folder.")],
    split: Annotated[str, typer.Option(help="Split to compute the statistics over.")] = "train",
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the dataset root).")] = None,
    strict: Annotated[bool, typer.Option(help="Fail on the first bad clip.")] = False,
) -> None:
    """Write video_feats_mean_std.bin and audio_feats_mean_std.bin (mean, unbiased std)."""
    from .data.stats import compute_stats, write_stats

    result = compute_stats(root, split, strict=strict)
    for problem in result.problems:
        typer.echo(f"skipped: {problem}", err=True)
    paths = write_stats(result, out or root)
    typer.echo(f"{result.n_clips} clips, {result.n_frames} frames of '{split}' -> "
               + ", ".join(str(p) for p in paths))


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write the generated dataset into.")],
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
) -> None:
    """Generate the embedded vico-mini dataset (ViCo challenge layout) into OUT."""
    from .data.synth import synthesize

    path = synthesize(out, seed=seed)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
