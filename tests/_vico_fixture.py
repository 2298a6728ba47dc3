"""Builds small ViCo-layout folders for tests with our own writers (no real data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from bench.data import formats
from bench.video import write_video

SR = 16000
SIZE = 64


@dataclass
class Clip:
    uuid: str
    split: str
    n_frames: int
    coeff: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (T,257)
    params: dict[str, np.ndarray] = field(default_factory=dict)  # role -> (T,5)
    audio: np.ndarray | None = None


def frames_for(seed: int, n: int) -> torch.Tensor:
    """(n,3,SIZE,SIZE) smooth moving pattern (compresses well, decodes close)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    out = []
    for t in range(n):
        phase = seed + 0.2 * t
        out.append(torch.stack([0.5 + 0.4 * torch.sin(6 * x + phase),
                                0.5 + 0.4 * torch.cos(5 * y - phase),
                                0.5 + 0.3 * torch.sin(4 * (x + y) + seed)]))
    return torch.stack(out)


def make_vico(root: Path, *, splits: dict[str, int] | None = None, n_frames: int = 10,
              full_layout: bool = False, seed: int = 0, coeff_format: str = "both") -> list[Clip]:
    """Write a ViCo folder: split CSVs with attitude, videos, wavs, first frames, coefficients.

    ``full_layout`` puts per-clip files into ``{folder}/{split}/`` and features under
    ``features/``; ``coeff_format`` is ``mat``, ``bin`` or ``both`` (alternating per clip).
    """
    splits = splits or {"train": 3, "val": 1}
    rng = np.random.default_rng(seed)
    clips: list[Clip] = []
    k = 0
    for split, count in splits.items():
        rows = []
        for i in range(count):
            uuid = f"{split}{i:03d}"
            clip = Clip(uuid=uuid, split=split, n_frames=n_frames + i)
            sub = split if full_layout else ""
            feat = "features/" if full_layout else ""
            t = clip.n_frames
            clip.audio = 0.2 * np.sin(2 * np.pi * 200 * np.arange(int(t / 30 * SR)) / SR) \
                * rng.uniform(0.5, 1.0)
            wav = root / "audios" / sub / f"{uuid}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, clip.audio, SR, subtype="FLOAT")
            for r, role in enumerate(("speaker", "listener")):
                frames = frames_for(k * 2 + r, t)
                write_video(root / "videos" / sub / f"{uuid}.{role}.mp4", [frames])
                ff = root / "first_frames" / sub / f"{uuid}.{role}.jpg"
                ff.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((frames[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(ff, quality=95)
                coeff = rng.normal(size=(t, 257)).astype(np.float32)
                params = np.concatenate([np.full((t, 2), 256.0), rng.normal(1, 0.1, (t, 1)),
                                         rng.normal(128, 5, (t, 2))], axis=1).astype(np.float32)
                clip.coeff[role], clip.params[role] = coeff, params
                fmt = coeff_format if coeff_format != "both" else ("mat" if (k + r) % 2 else "bin")
                if fmt == "mat":
                    formats.write_recon_mat(root / "recons" / sub / f"{uuid}.{role}.mat", coeff, params)
                else:
                    content = formats.video_feats_from_recon(coeff, params)
                    formats.write_video_feats(root / feat / "video_feats" / sub / f"{uuid}.{role}.bin",
                                              content[formats.DYNAMIC_KEY], content[formats.FIXED_KEY])
            rows.append(formats.SplitRow(str(100 + k), uuid, f"p{k}", f"q{k}",
                                         formats.ATTITUDES[k % 3]))
            clips.append(clip)
            k += 1
        formats.write_split_csv(root / ("lists" if full_layout else "") / f"{split}.csv", rows)
    return clips


def driver_order(coeff: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Independent restatement of SPEC 2: angle 224:227 | exp 80:144 | trans 254:257 | crop."""
    return np.concatenate([coeff[:, 224:227], coeff[:, 80:144], coeff[:, 254:257],
                           params[:, 2:5]], axis=1)
