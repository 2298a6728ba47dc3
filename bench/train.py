"""Training drivers on a :class:`~bench.contracts.Dataset` (``bench train``).

Two recipes (SPEC section 4):

* ``paper`` (Megvii): windows of T=90 frames, loss = L2(exp) + L2(crop) + L1(pose)
  + L2 of crop frame differences, AdamW (weight decay 0.05), batch 128, cosine
  learning rate 5e-3 -> 1e-4 over all steps;
* ``baseline`` (ViCo baseline): per-group L2 + "spiky" (frame-difference) L2 with the
  official weights, AdamW lr 1e-3 (weight decay 0.05), step decay x0.5 every 30
  epochs, batch 2.

"L2" is the official one: the Euclidean distance per frame between predicted and
true coefficient groups, averaged over frames (``F.pairwise_distance``), computed
in normalised space. As in the official code, output step ``t`` is trained against
frame ``t+1``. Validation runs every epoch on whole clips; the best epoch by
validation loss is kept (plus the next best ``snapshots-1`` for self-ensembles).
On CPU the same seed gives bit-identical weights.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import coeffs as C
from .checkpoints import CheckpointStore, RunKey, config_hash, save_checkpoint, versions
from .contracts import Dataset, NormStats
from .errors import ConfigError, InputError

TRAINABLE = ("lstm", "lstm-nobn", "lstm-nores", "lstm-nodrop", "vico-speaker", "vico-listener")

RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"lr": 5e-3, "lr_min": 1e-4, "weight_decay": 0.05, "batch_size": 128, "schedule": "cosine"},
    "baseline": {"lr": 1e-3, "lr_min": 0.0, "weight_decay": 0.05, "batch_size": 2, "schedule": "step30"},
}

#: official ViCo baseline loss weights (group distance, group "spiky" distance)
BASELINE_WEIGHTS = {"angle": (1.0, 1.0), "exp": (1.0, 0.001), "trans": (1.0, 1.0), "crop": (1.0, 1.0)}
_GROUPS = {"angle": C.ANGLE, "exp": C.EXP, "trans": C.TRANS, "crop": C.CROP}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (its hash keys the checkpoint store).

    ``None`` fields take the recipe's value.
    """

    arch: str = "lstm"
    recipe: str = "paper"
    epochs: int = 30
    batch_size: int | None = None
    clip_len: int = 90
    stride: int = 30
    lr: float | None = None
    lr_min: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    snapshots: int = 3
    attitude: bool = False
    #: listener: add the first frame to every output (not official; no new keys)
    residual: bool = False
    #: listener: the speaker enters as its motion since its first frame (not official; no new keys)
    speaker_motion: bool = False
    #: model size; None keeps the architecture's (official) size. The state-dict keys
    #: stay the official ones, only their shapes scale.
    width: int | None = None
    hidden: int | None = None
    train_split: str = "train"
    val_split: str = "val"

    def resolved(self) -> TrainConfig:
        if self.arch not in TRAINABLE:
            raise ConfigError(f"cannot train driver {self.arch!r}; trainable: {', '.join(TRAINABLE)}")
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {self.recipe!r}; known: {', '.join(RECIPES)}")
        if self.epochs < 1 or self.clip_len < 2 or self.stride < 1:
            raise ConfigError("epochs must be >= 1, clip_len >= 2 and stride >= 1")
        if (self.width is not None and self.width < 1) or (self.hidden is not None and self.hidden < 1):
            raise ConfigError("width and hidden must be >= 1")
        if self.residual and self.arch != "vico-listener":
            raise ConfigError(
                f"residual is a vico-listener option, not one of {self.arch!r}",
                fix="the lstm drivers have the residual already (lstm-nores drops it)",
            )
        if self.speaker_motion and self.arch != "vico-listener":
            raise ConfigError(f"speaker_motion is a vico-listener option, not one of {self.arch!r}")
        r = RECIPES[self.recipe]
        return replace(
            self,
            batch_size=self.batch_size or r["batch_size"],
            lr=r["lr"] if self.lr is None else self.lr,
            lr_min=r["lr_min"] if self.lr_min is None else self.lr_min,
            weight_decay=r["weight_decay"] if self.weight_decay is None else self.weight_decay,
        )

    @property
    def task(self) -> str:
        return "listening" if self.arch == "vico-listener" else "talking"

    def model_options(self) -> dict[str, Any]:
        """Constructor options of the model (stored in the sidecar, so loading rebuilds it)."""
        options: dict[str, Any] = {"attitude": True} if self.arch == "vico-listener" and self.attitude else {}
        if self.residual:
            options["residual"] = True
        if self.speaker_motion:
            options["speaker_motion"] = True
        if self.width is not None:
            options["width"] = self.width
        if self.hidden is not None:
            options["hidden"] = self.hidden
        return options


@dataclass
class Clip:
    """One normalised training clip."""

    audio: torch.Tensor  # (T,F)
    coeffs: torch.Tensor  # (T,73) generated role
    speaker: torch.Tensor | None  # (T,73) listening only
    attitude: int


@dataclass
class TrainResult:
    best: Path
    snapshots: list[Path]
    metrics: dict[str, Any]
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


# ---- losses -------------------------------------------------------------------------


def _dist(d: torch.Tensor) -> torch.Tensor:
    """Mean over frames of the per-frame Euclidean norm (the official pairwise distance)."""
    return (d.pow(2).sum(-1) + 1e-12).sqrt().mean()


def paper_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,T,73) normalised prediction vs aligned target -> scalar.

    L2(exp) + L2(crop) + L1(pose: angle and trans) + L2 of crop frame differences.
    """
    d = pred - target
    pose = torch.cat([d[..., C.ANGLE], d[..., C.TRANS]], -1).abs().mean()
    crop_motion = torch.diff(pred[..., C.CROP], dim=1) - torch.diff(target[..., C.CROP], dim=1)
    return _dist(d[..., C.EXP]) + _dist(d[..., C.CROP]) + pose + _dist(crop_motion)


def baseline_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The ViCo baseline's weighted group + spiky distances."""
    total = pred.new_zeros(())
    for name, (w, w_spiky) in BASELINE_WEIGHTS.items():
        p, t = pred[..., _GROUPS[name]], target[..., _GROUPS[name]]
        total = total + w * _dist(p - t) + w_spiky * _dist(torch.diff(p, dim=1) - torch.diff(t, dim=1))
    return total


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "paper": paper_loss,
    "baseline": baseline_loss,
}


# ---- data ---------------------------------------------------------------------------


def load_clips(dataset: Dataset, split: str, task: str, stats: NormStats) -> list[Clip]:
    """Normalised clips of ``split`` with ground truth (clips without it are skipped)."""
    from bench_plugins.drivers.models import ATTITUDES

    clips = []
    for sample in dataset.samples(split, task):  # type: ignore[arg-type]
        coeffs = sample.gt_coeffs()
        if coeffs is None:
            continue
        audio = sample.audio_features().float()
        speaker = sample.speaker_coeffs() if task == "listening" else None
        if task == "listening" and speaker is None:
            continue
        steps = min(len(audio), len(coeffs), len(speaker) if speaker is not None else len(coeffs))
        if audio.shape[-1] != stats.audio_mean.numel():
            raise InputError(
                getattr(dataset, "root", None),
                f"clip {sample.uuid}: {audio.shape[-1]}-dim audio features, but the dataset's "
                f"statistics are {stats.audio_mean.numel()}-dim",
            )
        clips.append(
            Clip(
                audio=(audio[:steps] - stats.audio_mean) / stats.audio_std,
                coeffs=(coeffs[:steps].float() - stats.coeff_mean) / stats.coeff_std,
                speaker=None if speaker is None else (speaker[:steps].float() - stats.coeff_mean) / stats.coeff_std,
                attitude=ATTITUDES.index(sample.attitude) if sample.attitude in ATTITUDES else len(ATTITUDES),
            )
        )
    return clips


def windows(clips: Sequence[Clip], clip_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(clip index, start, length) windows: every ``stride`` frames, plus one ending at the clip's end."""
    out = []
    for i, clip in enumerate(clips):
        steps = len(clip.coeffs)
        if steps < 2:
            continue
        if steps <= clip_len:
            out.append((i, 0, steps))
            continue
        starts = list(range(0, steps - clip_len + 1, stride))
        if starts[-1] != steps - clip_len:
            starts.append(steps - clip_len)
        out.extend((i, s, clip_len) for s in starts)
    return out


def batches(
    wins: Sequence[tuple[int, int, int]], batch_size: int, gen: torch.Generator
) -> list[list[tuple[int, int, int]]]:
    """Shuffled batches of windows of equal length (short clips batch with their own length)."""
    by_len: dict[int, list[tuple[int, int, int]]] = {}
    for w in wins:
        by_len.setdefault(w[2], []).append(w)
    out: list[list[tuple[int, int, int]]] = []
    for length in sorted(by_len):
        group = by_len[length]
        order = torch.randperm(len(group), generator=gen).tolist()
        group = [group[k] for k in order]
        out.extend(group[k : k + batch_size] for k in range(0, len(group), batch_size))
    order = torch.randperm(len(out), generator=gen).tolist()
    return [out[k] for k in order]


def collate(clips: Sequence[Clip], batch: Sequence[tuple[int, int, int]]) -> dict[str, torch.Tensor | None]:
    sl = [(clips[i], slice(s, s + n)) for i, s, n in batch]
    speaker = None if sl[0][0].speaker is None else torch.stack([c.speaker[s] for c, s in sl])  # type: ignore[index]
    return {
        "audio": torch.stack([c.audio[s] for c, s in sl]),
        "coeffs": torch.stack([c.coeffs[s] for c, s in sl]),
        "speaker": speaker,
        "attitude": torch.tensor([c.attitude for c, _ in sl], dtype=torch.long),
    }


def forward_loss(
    model: nn.Module, data: dict[str, torch.Tensor | None], loss_fn: Callable[..., torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of output steps 0..T-2 against frames 1..T-1, and those aligned predictions."""
    coeffs = data["coeffs"]
    assert coeffs is not None
    out = model(data["audio"], coeffs[:, 0], data["speaker"], data["attitude"])
    pred = out[:, :-1]
    return loss_fn(pred, coeffs[:, 1:]), pred


# ---- the loop -----------------------------------------------------------------------


def _lr_at(cfg: TrainConfig, step: int, total: int, epoch: int) -> float:
    assert cfg.lr is not None and cfg.lr_min is not None
    if RECIPES[cfg.recipe]["schedule"] == "cosine":
        frac = step / max(1, total - 1)
        return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * frac))
    return cfg.lr * 0.5 ** (epoch // 30)


def evaluate(
    model: nn.Module, clips: Sequence[Clip], stats: NormStats, loss_fn: Callable[..., torch.Tensor]
) -> dict[str, float]:
    """Frame-weighted loss and denormalised coefficient L1 on frames 1..T-1 of whole clips."""
    model.eval()
    loss_sum = l1_sum = 0.0
    frames = 0
    with torch.no_grad():
        for i in range(len(clips)):
            n = len(clips[i].coeffs)
            if n < 2:
                continue
            data = collate(clips, [(i, 0, n)])
            loss, pred = forward_loss(model, data, loss_fn)
            target = data["coeffs"][:, 1:]  # type: ignore[index]
            l1 = ((pred - target) * stats.coeff_std).abs().mean()
            loss_sum += float(loss) * (n - 1)
            l1_sum += float(l1) * (n - 1)
            frames += n - 1
    if frames == 0:
        return {"loss": float("nan"), "coeff_l1": float("nan")}
    return {"loss": loss_sum / frames, "coeff_l1": l1_sum / frames}


def _split_clips(dataset: Dataset, cfg: TrainConfig, stats: NormStats) -> tuple[list[Clip], list[Clip], str]:
    splits = dataset.splits()
    if cfg.train_split not in splits:
        raise ConfigError(f"dataset {dataset.name!r} has no split {cfg.train_split!r} (has {', '.join(splits)})")
    train = load_clips(dataset, cfg.train_split, cfg.task, stats)
    if not train:
        raise InputError(
            dataset.root,
            f"no {cfg.task} clips with ground-truth coefficients in split {cfg.train_split!r}",
            fix="training needs coefficients (recons/ or video_feats/) for the training clips",
        )
    if cfg.val_split in splits:
        val = load_clips(dataset, cfg.val_split, cfg.task, stats)
        if val:
            return train, val, cfg.val_split
    # No validation split: hold out every 10th training clip (deterministic).
    held = [c for k, c in enumerate(train) if k % 10 == 9] or train[-1:]
    kept = [c for k, c in enumerate(train) if k % 10 != 9] or train
    return kept, held, f"{cfg.train_split}[every 10th]"


def run_key(dataset: Dataset, cfg: TrainConfig) -> RunKey:
    cfg = cfg.resolved()
    ident = {k: v for k, v in asdict(cfg).items() if k != "seed"}
    # Options at their default are left out, so older runs keep their keys (and hashes).
    for name, default in (("width", None), ("hidden", None), ("residual", False), ("speaker_motion", False)):
        if ident[name] == default:
            del ident[name]
    ident["dataset_hash"] = dataset.content_hash()
    return RunKey(cfg.arch, dataset.name, config_hash(ident), cfg.seed)


def train(
    dataset: Dataset,
    config: TrainConfig,
    *,
    store: CheckpointStore | None = None,
    progress: bool = True,
    dtype: torch.dtype | None = None,
    log: Callable[[str], None] | None = None,
    threads: int | None = 1,
) -> TrainResult:
    """Train one driver; write ``best.pt`` + snapshots to the store; return where they are.

    Args:
        dataset: a dataset with ``train`` (and ideally ``val``) splits with coefficients.
        config: the run's config (recipe defaults fill ``None`` fields).
        store: where checkpoints go (default ``$BENCH_HOME/checkpoints``).
        progress: show a rich progress bar with the running loss.
        dtype: cast float tensors when saving (fp16 for shipped checkpoints).
        threads: torch intra-op threads while training (restored afterwards). One
            thread is the default: these small recurrent models gain little from more,
            a busy machine makes more threads far slower, and bit-identical results
            across machines need the same count. None keeps the current setting.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(dataset, config, store=store, progress=progress, dtype=dtype, log=log)
    finally:
        torch.set_num_threads(previous)


def _train(
    dataset: Dataset,
    config: TrainConfig,
    *,
    store: CheckpointStore | None,
    progress: bool,
    dtype: torch.dtype | None,
    log: Callable[[str], None] | None,
) -> TrainResult:
    cfg = config.resolved()
    store = store or CheckpointStore()
    key = run_key(dataset, cfg)
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    from bench_plugins.drivers.neural import build_model, norm_to_json, usable_stats

    stats = usable_stats(dataset.norm_stats())
    train_clips, val_clips, val_name = _split_clips(dataset, cfg, stats)
    audio_dim = int(train_clips[0].audio.shape[-1])
    model = build_model(cfg.arch, audio_dim, **cfg.model_options())
    loss_fn = LOSSES[cfg.recipe]
    assert cfg.lr is not None and cfg.batch_size is not None
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay or 0.0)
    wins = windows(train_clips, cfg.clip_len, cfg.stride)
    per_epoch = len(batches(wins, cfg.batch_size, torch.Generator().manual_seed(0)))
    total = per_epoch * cfg.epochs

    ranked: list[tuple[float, int, dict[str, torch.Tensor], dict[str, float]]] = []
    history: list[dict[str, float]] = []
    step = 0
    bar = _Bar(f"{cfg.arch} seed {cfg.seed}", total, enabled=progress)
    with bar:
        for epoch in range(cfg.epochs):
            model.train()
            run_loss, seen = 0.0, 0
            for batch in batches(wins, cfg.batch_size, gen):
                for group in optim.param_groups:
                    group["lr"] = _lr_at(cfg, step, total, epoch)
                loss, _ = forward_loss(model, collate(train_clips, batch), loss_fn)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                step += 1
                run_loss += loss.item() * len(batch)
                seen += len(batch)
                bar.advance(loss=run_loss / seen)
            val = evaluate(model, val_clips, stats, loss_fn)
            row = {"epoch": epoch + 1, "train_loss": run_loss / max(seen, 1), "val_loss": val["loss"], "val_coeff_l1": val["coeff_l1"]}
            history.append(row)
            bar.epoch_done(epoch + 1, cfg.epochs, val["loss"])
            if log is not None:
                log(f"epoch {epoch + 1}/{cfg.epochs} train {row['train_loss']:.4f} val {val['loss']:.4f} l1 {val['coeff_l1']:.4f}")
            ranked.append((val["loss"], epoch + 1, copy.deepcopy(model.state_dict()), val))
            ranked.sort(key=lambda r: (r[0], r[1]))
            del ranked[cfg.snapshots :]

    folder = store.run_dir(key)
    seconds = time.perf_counter() - started
    sidecar_base = {
        "model": {"arch": cfg.arch, "audio_dim": audio_dim, "options": cfg.model_options()},
        "norm": norm_to_json(stats),
        "train": asdict(cfg),
        "dataset": {"name": dataset.name, "content_hash": dataset.content_hash(), "val_split": val_name},
        "run": {"key": asdict(key), "seconds": round(seconds, 2), "threads": torch.get_num_threads(), "history": history},
        "versions": versions(),
    }
    paths = []
    for rank, (vloss, ep, state, val) in enumerate(ranked):
        name = "best.pt" if rank == 0 else f"snap{rank}.pt"
        meta = {**sidecar_base, "metrics": {"epoch": ep, "rank": rank, "val_loss": vloss, "val_coeff_l1": val["coeff_l1"]}}
        # The best checkpoint is written last: its presence marks the run as finished.
        paths.append((folder / name, state, meta))
    for path, state, meta in [*paths[1:], paths[0]]:
        save_checkpoint(path, state, meta, dtype=dtype)
    best_meta = paths[0][2]["metrics"]
    return TrainResult(paths[0][0], [p for p, _, _ in paths], best_meta, seconds, history)


def train_many(
    dataset: Dataset,
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    store: CheckpointStore | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    threads: int | None = 1,
) -> list[tuple[int, Path, float]]:
    """Train ``config`` for each seed, skipping finished runs; (seed, best path, val loss) per seed."""
    import json

    store = store or CheckpointStore()
    out = []
    for seed in seeds:
        cfg = replace(config, seed=seed)
        key = run_key(dataset, cfg)
        if store.is_done(key):
            if log is not None:
                log(f"seed {seed}: finished earlier, reusing {store.best(key)}")
        else:
            train(dataset, cfg, store=store, progress=progress, log=log, threads=threads)
        meta = json.loads(store.best(key).with_suffix(".json").read_text())
        out.append((seed, store.best(key), float(meta["metrics"]["val_loss"])))
    return out


def select_best(runs: Sequence[tuple[int, Path, float]], k: int) -> list[tuple[int, Path, float]]:
    """The ``k`` runs with the lowest validation loss (ties: lower seed first)."""
    return sorted(runs, key=lambda r: (r[2], r[0]))[:k]


class _Bar:
    """A rich progress bar showing the running training loss and last validation loss."""

    def __init__(self, title: str, total: int, *, enabled: bool) -> None:
        self.enabled = enabled
        self.title = title
        self.total = total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  val {task.fields[val]}"),
                TimeElapsedColumn(),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.title, total=self.total, loss=float("nan"), val="-")
        return self

    def advance(self, *, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=loss)

    def epoch_done(self, epoch: int, epochs: int, val_loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, val=f"{val_loss:.4f} (epoch {epoch}/{epochs})")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def driver_coeff_l1(
    driver: Any, dataset: Dataset, split: str, task: str = "talking", *, scale: torch.Tensor | None = None
) -> float:
    """Mean |pred - gt| of denormalised coefficients over frames 1..T-1 of every clip, pooled.

    Frame 0 is excluded: every driver is given it. One clip per call (no padding).
    ``scale`` (73,) divides each dimension's error (the training std gives the
    z-scored L1, in which every coefficient counts alike; raw units are dominated by
    the crop's pixel offsets).
    """
    from .contracts import DriverBatch

    total, frames = 0.0, 0
    for sample in dataset.samples(split, task):  # type: ignore[arg-type]
        gt = sample.gt_coeffs()
        if gt is None:
            continue
        audio = sample.audio_features().float()
        speaker = sample.speaker_coeffs() if task == "listening" else None
        steps = min(len(audio), len(gt), len(speaker) if speaker is not None else len(gt))
        batch = DriverBatch(
            audio=audio[None, :steps],
            init=gt[None, 0].float(),
            speaker=None if speaker is None else speaker[None, :steps].float(),
            attitude=[sample.attitude],
            gt=gt[None, :steps].float(),
            uuids=[sample.uuid],
        )
        pred = driver.predict(batch)[0]
        err = (pred[1:steps] - gt[1:steps].float()).abs()
        if scale is not None:
            err = err / scale.to(err)
        total += float(err.sum()) / pred.shape[-1]
        frames += steps - 1
    return total / max(frames, 1)
