"""``bench train``: train drivers into the checkpoint store (and export shipped sets).

Single drivers (``lstm``, ``lstm-nobn``, ``lstm-nores``, ``lstm-nodrop``,
``vico-speaker``, ``vico-listener``) train one run. Named ensembles train their
members: ``lstm-self3`` one lstm run keeping its 3 best epochs, ``lstm-ens5`` ten
seeded lstm runs keeping the 5 best by validation loss, ``listener-ens3`` three
seeded listener runs. Finished runs are found in the store and not retrained, so
an interrupted ensemble resumes where it stopped.

Torch is imported inside the command only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

#: named ensembles: (member architecture, number of seeds trained, members kept, self-ensemble?)
ENSEMBLES: dict[str, tuple[str, int, int, bool]] = {
    "lstm-self3": ("lstm", 1, 3, True),
    "lstm-ens5": ("lstm", 10, 5, False),
    "listener-ens3": ("vico-listener", 3, 3, False),
}


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)


def train_command(
    driver: Annotated[str, typer.Option("--driver", "-d", help="Driver to train (lstm, lstm-ens5, vico-listener, ...).")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name (e.g. vico-mini).")],
    seed: Annotated[int, typer.Option(help="Seed (ensembles: the first of consecutive seeds).")] = 0,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Batch size (default: the recipe's).")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs per run.")] = 30,
    recipe: Annotated[str, typer.Option(help="'paper' (Megvii) or 'baseline' (ViCo baseline).")] = "paper",
    clip_len: Annotated[int, typer.Option("--clip-len", help="Training window length in frames.")] = 90,
    stride: Annotated[int, typer.Option(help="Frames between training windows.")] = 30,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: the recipe's).")] = None,
    attitude: Annotated[bool, typer.Option(help="Listener: condition on the attitude.")] = False,
    residual: Annotated[
        bool, typer.Option(help="Listener: add the first frame to every output (not official; same keys).")
    ] = False,
    speaker_motion: Annotated[
        bool,
        typer.Option(
            "--speaker-motion",
            help="Listener: feed the speaker's motion since its first frame, not its coefficients "
            "(not official; same keys).",
        ),
    ] = False,
    weight_decay: Annotated[
        float | None, typer.Option("--weight-decay", help="AdamW weight decay (default: the recipe's).")
    ] = None,
    hidden: Annotated[
        int | None, typer.Option(help="LSTM hidden size (default: the official 96; the key layout stays official).")
    ] = None,
    width: Annotated[
        int | None, typer.Option(help="Input projection width (default: the official 192).")
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Ensembles: number of seeded runs (default per ensemble).")] = None,
    export: Annotated[
        Path | None,
        typer.Option(help="Also copy the result (fp16) into this folder and record it in its manifest.json."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
    threads: Annotated[int, typer.Option(help="Torch threads while training (1: fast for these models, reproducible).")] = 1,
) -> None:
    """Train a driver on a dataset; checkpoints go to $BENCH_HOME/checkpoints."""
    import bench
    from bench.checkpoints import CheckpointStore
    from bench.errors import ConfigError
    from bench.train import TRAINABLE, TrainConfig, select_best, train_many

    if driver not in TRAINABLE and driver not in ENSEMBLES:
        raise ConfigError(
            f"cannot train driver {driver!r}",
            fix=f"trainable: {', '.join([*TRAINABLE, *ENSEMBLES])}",
        )
    data = bench.load("dataset", dataset)
    store = CheckpointStore()
    arch, n_seeds, keep, is_self = ENSEMBLES.get(driver, (driver, 1, 1, False))
    if seeds is not None and driver in ENSEMBLES and not is_self:
        n_seeds = seeds
    cfg = TrainConfig(
        arch=arch,
        recipe=recipe,
        epochs=epochs,
        batch_size=batch_size,
        clip_len=clip_len,
        stride=stride,
        lr=lr,
        seed=seed,
        snapshots=max(3, keep) if is_self else 3,
        attitude=attitude,
        residual=residual,
        speaker_motion=speaker_motion,
        weight_decay=weight_decay,
        hidden=hidden,
        width=width,
    )
    runs = train_many(data, cfg, range(seed, seed + n_seeds), store=store, progress=progress, log=typer.echo, threads=threads)
    if is_self:
        from bench.train import run_key

        files = store.snapshots(run_key(data, cfg))[:keep]
        chosen = [(seed, f, float("nan")) for f in files]
    else:
        chosen = select_best(runs, keep)
        files = [p for _, p, _ in chosen]
    for s, path, vloss in runs:
        mark = "*" if any(path == p for p in files) else " "
        typer.echo(f"{mark} seed {s}: val loss {vloss:.4f}  {path}")
    if driver in ENSEMBLES:
        listing = _write_selection(store.root, driver, data.name, cfg, files, chosen)
        typer.echo(f"ensemble {driver}: {len(files)} members listed in {listing}")
        typer.echo(f"use it with: --driver '{driver}:{listing}'")
    else:
        typer.echo(f"use it with: --driver '{driver}:{files[0]}'")
    if export is not None:
        exported = export_shipped(export, driver, files, _command_line(driver, dataset, cfg, n_seeds))
        typer.echo(f"exported {len(exported)} file(s) to {export}")


def _command_line(driver: str, dataset: str, cfg: Any, n_seeds: int) -> str:
    parts = [f"bench train --driver {driver} --dataset {dataset} --seed {cfg.seed} --epochs {cfg.epochs}"]
    if cfg.batch_size is not None:
        parts.append(f"--batch-size {cfg.batch_size}")
    if cfg.recipe != "paper":
        parts.append(f"--recipe {cfg.recipe}")
    if cfg.clip_len != 90 or cfg.stride != 30:
        parts.append(f"--clip-len {cfg.clip_len} --stride {cfg.stride}")
    if cfg.lr is not None:
        parts.append(f"--lr {cfg.lr}")
    if cfg.attitude:
        parts.append("--attitude")
    if cfg.weight_decay is not None:
        parts.append(f"--weight-decay {cfg.weight_decay}")
    if cfg.residual:
        parts.append("--residual")
    if cfg.speaker_motion:
        parts.append("--speaker-motion")
    if cfg.hidden is not None:
        parts.append(f"--hidden {cfg.hidden}")
    if cfg.width is not None:
        parts.append(f"--width {cfg.width}")
    if driver in ENSEMBLES and n_seeds != ENSEMBLES[driver][1]:
        parts.append(f"--seeds {n_seeds}")
    return " ".join(parts)


def _write_selection(root: Path, driver: str, dataset: str, cfg: Any, files: list[Path], chosen: Any) -> Path:
    import json

    from bench.checkpoints import config_hash

    folder = root / driver / dataset / config_hash({"files": [str(f) for f in files]})
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "selection.json"
    listing.write_text(
        json.dumps(
            {"driver": driver, "files": [str(f) for f in files], "members": [[s, str(p), v] for s, p, v in chosen]},
            indent=1,
        )
    )
    return listing


def export_shipped(folder: Path, name: str, files: list[Path], command: str) -> list[Path]:
    """Copy checkpoints (as fp16) into ``folder`` and record ``name`` in its ``manifest.json``.

    Files are named by content hash so drivers sharing a member share the file.
    """
    import json

    from bench.checkpoints import load_checkpoint, save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"drivers": {}}
    names = []
    for path in files:
        import torch

        state, meta = load_checkpoint(path)
        arch = meta.get("model", {}).get("arch", "model")
        seed = meta.get("train", {}).get("seed", 0)
        rank = meta.get("metrics", {}).get("rank", 0)
        target = folder / f"{arch}-seed{seed}-{'best' if rank == 0 else f'snap{rank}'}-{meta.get('run', {}).get('key', {}).get('config_hash', 'x')}.pt"
        save_checkpoint(target, state, meta, dtype=torch.float16)
        names.append(target.name)
    manifest["drivers"][name] = {"files": names, "command": command}
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return [folder / n for n in names]
