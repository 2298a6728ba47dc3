"""Neural drivers: checkpoint loading, normalisation, the official frame alignment.

A :class:`NeuralDriver` wraps one torch module of :mod:`.models`. It takes raw
audio features and coefficients (the :class:`~bench.contracts.DriverBatch`),
z-scores them with the statistics stored in the checkpoint's sidecar, runs the
model, and returns denormalised driver-order coefficients where frame 0 is the
given first frame and frame ``t+1`` is the model's output at step ``t`` (the
official alignment, so official checkpoints behave as in the official code).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.checkpoints import load_checkpoint, load_strict
from bench.contracts import DriverBatch, NormStats
from bench.errors import ConfigError, InputError

from .models import ATTITUDES, RegularisedLSTM, VicoListener, VicoSpeaker, attitude_index
from .shipped import shipped_checkpoints

#: architecture name -> (module class, constructor options, tasks)
ARCHS: dict[str, tuple[type[nn.Module], dict[str, Any], frozenset[str]]] = {
    "lstm": (RegularisedLSTM, {}, frozenset({"talking"})),
    "lstm-nobn": (RegularisedLSTM, {"batch_norm": False}, frozenset({"talking"})),
    "lstm-nores": (RegularisedLSTM, {"residual": False}, frozenset({"talking"})),
    "lstm-nodrop": (RegularisedLSTM, {"dropout": 0.0}, frozenset({"talking"})),
    "vico-speaker": (VicoSpeaker, {}, frozenset({"talking"})),
    "vico-listener": (VicoListener, {}, frozenset({"listening"})),
}

#: audio sizes of the official features by sample rate (SPEC section 3)
_AUDIO_DIM_HINT = {45: "44.1 kHz audio", 43: "16 kHz audio"}

def build_model(arch: str, audio_dim: int = 45, **options: Any) -> nn.Module:
    """A fresh (randomly initialised) module for ``arch`` with ``audio_dim`` features."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown driver architecture {arch!r}; known: {', '.join(ARCHS)}")
    cls, defaults, _ = ARCHS[arch]
    return cls(audio_dim, **{**defaults, **options})


def norm_to_json(stats: NormStats) -> dict[str, list[float]]:
    return {
        "coeff_mean": stats.coeff_mean.tolist(),
        "coeff_std": stats.coeff_std.tolist(),
        "audio_mean": stats.audio_mean.tolist(),
        "audio_std": stats.audio_std.tolist(),
    }


def norm_from_json(data: Mapping[str, Sequence[float]]) -> NormStats:
    return NormStats(**{k: torch.tensor(data[k], dtype=torch.float32) for k in NormStats.__dataclass_fields__})


def usable_stats(stats: NormStats) -> NormStats:
    """Replace zero standard deviations by 1.

    Constant feature dimensions (the single-frame MFCC deltas of the official
    features are exactly 0 on synthetic audio) would otherwise divide by zero; a
    constant dimension carries no information, so any scale serves.
    """
    fix = lambda std: torch.where(std > 0, std, torch.ones_like(std))  # noqa: E731
    return NormStats(stats.coeff_mean, fix(stats.coeff_std), stats.audio_mean, fix(stats.audio_std))


def read_official_stats(folder: str | Path) -> NormStats:
    """Stats from the official ``video_feats_mean_std.bin`` + ``audio_feats_mean_std.bin``."""
    folder = Path(folder)
    video, audio = folder / "video_feats_mean_std.bin", folder / "audio_feats_mean_std.bin"
    for path in (video, audio):
        if not path.is_file():
            raise InputError(path, "official normalisation file not found", fix="pass the ViCo `features/` folder as stats=")
    v = torch.load(video, map_location="cpu", weights_only=False)["angle.exp.trans"]
    a = torch.load(audio, map_location="cpu", weights_only=False)
    t = lambda x: torch.as_tensor(x, dtype=torch.float32).reshape(-1)  # noqa: E731
    return NormStats(t(v["mean"]), t(v["std"]), t(a["mean"]), t(a["std"]))


class NeuralDriver:
    """A driver around one model of :mod:`.models` (see the module docstring).

    Args:
        arch: architecture name (``lstm``, ``lstm-nobn``, ``lstm-nores``, ``lstm-nodrop``,
            ``vico-speaker``, ``vico-listener``).
        checkpoint: a state dict file (official layout, with or without ``module.``
            prefix); its sidecar ``.json`` supplies config and normalisation stats.
            None: the checkpoint shipped with headbench for ``shipped`` (or ``arch``).
        stats: normalisation for checkpoints without a sidecar (official releases):
            a folder with the official ``*_mean_std.bin`` files, a sidecar-style JSON
            file, or a :class:`NormStats`.
        attitude: (listener) condition the initial state on the attitude.
        device: torch device for inference.
    """

    def __init__(
        self,
        arch: str = "lstm",
        checkpoint: str | Path | None = None,
        *,
        stats: str | Path | NormStats | None = None,
        attitude: bool | None = None,
        shipped: str | None = None,
        device: str = "cpu",
    ) -> None:
        if arch not in ARCHS:
            raise ConfigError(f"unknown driver architecture {arch!r}; known: {', '.join(ARCHS)}")
        self.arch = arch
        self.tasks = ARCHS[arch][2]
        self.device = torch.device(device)
        path = Path(checkpoint) if checkpoint is not None else shipped_checkpoints(shipped or arch)[0]
        state, meta = load_checkpoint(path)
        self.checkpoint = path
        self.meta = meta
        model_cfg = dict(meta.get("model", {}))
        if model_cfg.get("arch", arch) != arch:
            raise InputError(
                path,
                f"was trained as driver {model_cfg['arch']!r}, not {arch!r}",
                fix=f"load it with --driver {model_cfg['arch']}",
            )
        options = dict(model_cfg.get("options", {}))
        if attitude is not None and arch == "vico-listener":
            options["attitude"] = attitude
        audio_dim = int(model_cfg.get("audio_dim") or _infer_audio_dim(arch, state))
        self.model = build_model(arch, audio_dim, **options)
        load_strict(self.model, state, source=path)
        self.model.eval().to(self.device)
        self.audio_dim = audio_dim
        self.norm = usable_stats(self._resolve_stats(stats, meta, path))
        if self.norm.audio_mean.numel() != audio_dim:
            raise InputError(
                path,
                f"normalisation stats are for {self.norm.audio_mean.numel()}-dim audio but the "
                f"model takes {audio_dim}-dim audio",
            )

    @staticmethod
    def _resolve_stats(stats: str | Path | NormStats | None, meta: Mapping[str, Any], path: Path) -> NormStats:
        if isinstance(stats, NormStats):
            return stats
        if stats is not None:
            stats = Path(stats)
            if stats.is_dir():
                return read_official_stats(stats)
            return norm_from_json(json.loads(stats.read_text())["norm"])
        if "norm" not in meta:
            raise InputError(
                path,
                "has no sidecar with normalisation statistics (official checkpoints come without one)",
                fix="pass stats=FOLDER with the official video_feats_mean_std.bin and "
                "audio_feats_mean_std.bin, or a sidecar .json",
            )
        return norm_from_json(meta["norm"])

    def check_audio_dim(self, dim: int) -> None:
        """Raise :class:`ConfigError` if ``dim``-dim features cannot drive this model (call while planning)."""
        if dim != self.audio_dim:
            have = _AUDIO_DIM_HINT.get(dim, "")
            want = _AUDIO_DIM_HINT.get(self.audio_dim, "")
            raise ConfigError(
                f"driver {self.arch!r} ({self.checkpoint.name}) takes {self.audio_dim}-dim audio "
                f"features{f' ({want})' if want else ''}, but the data has {dim}-dim features"
                f"{f' ({have})' if have else ''}",
                fix=f"resample the audio to the rate the model was trained on, or train a model on "
                f"{dim}-dim features with `bench train`",
            )

    def predict(self, batch: DriverBatch) -> torch.Tensor:
        """(B,T,F) raw audio + (B,73) first frame [+ (B,T,73) speaker] -> (B,T,73) denormalised."""
        z = self.predict_normalised(batch)
        return self.denormalise(z)

    def predict_normalised(self, batch: DriverBatch) -> torch.Tensor:
        """Like :meth:`predict` but in this driver's normalised space."""
        self.check_audio_dim(int(batch.audio.shape[-1]))
        if "listening" in self.tasks and batch.speaker is None:
            raise ConfigError(
                f"driver {self.arch!r} needs the speaker's coefficients (listening samples)",
                fix="use a dataset with speaker coefficients (recons/ or video_feats/)",
            )
        n = self.norm
        dev = self.device
        audio = ((batch.audio.float().to(dev) - n.audio_mean.to(dev)) / n.audio_std.to(dev))
        init = self.normalise(batch.init.float().to(dev))
        speaker = None if batch.speaker is None else self.normalise(batch.speaker.float().to(dev))
        att = attitude_index(tuple(batch.attitude), audio.shape[0]).to(dev)
        with torch.no_grad():
            out = self.model(audio, init, speaker, att)
        # Step t predicts frame t+1; frame 0 is the given first frame.
        return torch.cat([init[:, None, :], out[:, :-1]], dim=1).to(batch.audio.device)

    def normalise(self, coeffs: torch.Tensor) -> torch.Tensor:
        n = self.norm
        return (coeffs - n.coeff_mean.to(coeffs.device)) / n.coeff_std.to(coeffs.device)

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        n = self.norm
        return z * n.coeff_std.to(z.device) + n.coeff_mean.to(z.device)


def _infer_audio_dim(arch: str, state: Mapping[str, torch.Tensor]) -> int:
    """Audio size of an official checkpoint without sidecar, read from its first layer."""
    keys = {
        RegularisedLSTM: ("audio_to_face.fusion.0.weight", -73),
        VicoSpeaker: ("audio_to_face.fusion.0.weight", 0),
        VicoListener: ("fusion.fusion.0.weight", -73),
    }
    key, offset = keys[ARCHS[arch][0]]
    for name in (key, f"module.{key}"):
        if name in state and state[name].ndim == 2:
            return int(state[name].shape[1]) + offset
    return 45  # let the strict load report what is wrong


class EnsembleDriver:
    """Mean of member drivers' predictions in normalised space.

    The normalised space is the first member's that has statistics (``.norm``);
    members may differ in architecture, checkpoint and task support (the
    ensemble serves the tasks all members serve).

    Args:
        members: driver names (``"lstm"``, ``"lstm:PATH"``) or driver objects.
        checkpoints: checkpoint files, each loaded as ``arch`` (a comma-separated
            string is accepted; a ``.json`` file listing ``files`` also works).
    """

    def __init__(
        self,
        members: Sequence[Any] | str = (),
        checkpoints: Sequence[str | Path] | str | Path = (),
        *,
        arch: str = "lstm",
        device: str = "cpu",
    ) -> None:
        import bench

        if isinstance(members, str):
            members = [m for m in members.split(",") if m]
        drivers: list[Any] = [bench.load("driver", m) if isinstance(m, str) else m for m in members]
        for path in _checkpoint_list(checkpoints):
            drivers.append(NeuralDriver(arch, path, device=device))
        if not drivers:
            raise ConfigError("an ensemble needs at least one member", fix="pass members=a,b or checkpoints=...")
        self.members = drivers
        tasks = frozenset.intersection(*(frozenset(d.tasks) for d in drivers))
        if not tasks:
            raise ConfigError("the ensemble's members serve no common task")
        self.tasks = tasks
        self.model = nn.ModuleList([d.model for d in drivers if isinstance(d.model, nn.Module)])
        self._ref = next((d for d in drivers if getattr(d, "norm", None) is not None), None)

    def check_audio_dim(self, dim: int) -> None:
        for member in self.members:
            if hasattr(member, "check_audio_dim"):
                member.check_audio_dim(dim)

    def predict(self, batch: DriverBatch) -> torch.Tensor:
        """(B,T,73) denormalised: the mean of the members' normalised predictions."""
        self.check_audio_dim(int(batch.audio.shape[-1]))
        preds = [m.predict(batch).float().to(batch.audio.device) for m in self.members]
        if self._ref is None:
            return torch.stack(preds).mean(0)
        z = torch.stack([self._ref.normalise(p) for p in preds]).mean(0)
        return self._ref.denormalise(z)


def _checkpoint_list(checkpoints: Sequence[str | Path] | str | Path) -> list[Path]:
    if isinstance(checkpoints, (str, Path)):
        text = str(checkpoints)
        if text.endswith(".json") and Path(text).is_file():
            listing = json.loads(Path(text).read_text())
            base = Path(text).parent
            return [base / f for f in listing["files"]]
        return [Path(p) for p in text.split(",") if p]
    return [Path(p) for p in checkpoints]


# ---- factories named in the registry -------------------------------------------------


def lstm(checkpoint: str | None = None, *, device: str = "cpu", **options: Any) -> NeuralDriver:
    return NeuralDriver("lstm", checkpoint, device=device, **options)


def lstm_nobn(checkpoint: str | None = None, *, device: str = "cpu", **options: Any) -> NeuralDriver:
    return NeuralDriver("lstm-nobn", checkpoint, device=device, **options)


def lstm_nores(checkpoint: str | None = None, *, device: str = "cpu", **options: Any) -> NeuralDriver:
    return NeuralDriver("lstm-nores", checkpoint, device=device, **options)


def lstm_nodrop(checkpoint: str | None = None, *, device: str = "cpu", **options: Any) -> NeuralDriver:
    return NeuralDriver("lstm-nodrop", checkpoint, device=device, **options)


def vico_speaker(checkpoint: str | None = None, *, device: str = "cpu", **options: Any) -> NeuralDriver:
    return NeuralDriver("vico-speaker", checkpoint, device=device, **options)


def vico_listener(checkpoint: str | None = None, *, device: str = "cpu", **options: Any) -> NeuralDriver:
    return NeuralDriver("vico-listener", checkpoint, device=device, **options)


def shipped_ensemble(
    shipped: str, arch: str = "lstm", checkpoints: Sequence[str | Path] | str | None = None, device: str = "cpu"
) -> EnsembleDriver:
    """A named ensemble (``lstm-self3``, ``lstm-ens5``, ``listener-ens3``): shipped members by default."""
    files = checkpoints if checkpoints else shipped_checkpoints(shipped)
    return EnsembleDriver(checkpoints=files, arch=arch, device=device)


ATTITUDE_NAMES = ATTITUDES
