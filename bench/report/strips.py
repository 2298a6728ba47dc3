"""Sample strips: ground truth, generated and difference frames side by side.

Generated frames come from a ``--save-videos`` folder; ground truth from the
cell's dataset. Strips are PNGs inlined as data URIs so the site stays
self-contained.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

from ..contracts import ROLE_OF_TASK
from .model import CellResult
from .site import Strip


def strip_png(gt: object, generated: object, *, gain: float = 4.0) -> str:
    """(k,3,H,W) GT and generated frames in [0,1] -> base64 PNG of rows GT / generated / |diff|*gain."""
    import numpy as np
    from PIL import Image

    from ..video import to_uint8

    gt_u8 = to_uint8(gt)  # type: ignore[arg-type]
    gen_u8 = to_uint8(generated)  # type: ignore[arg-type]
    diff = np.clip(np.abs(gt_u8.astype(np.int16) - gen_u8.astype(np.int16)) * gain, 0, 255).astype(np.uint8)
    rows = [np.concatenate(list(block), axis=1) for block in (gt_u8, gen_u8, diff)]
    image = Image.fromarray(np.concatenate(rows, axis=0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _frames_at(path: Path, indices: Sequence[int]) -> object:
    import torch

    from ..video import read_frames

    wanted, picked = set(indices), []
    offset = 0
    for batch in read_frames(path, 32):
        for i in range(batch.shape[0]):
            if offset + i in wanted:
                picked.append(batch[i])
        offset += batch.shape[0]
        if len(picked) == len(wanted):
            break
    return torch.stack(picked) if picked else None


def strips_for_boards(cells: Sequence[CellResult], videos: Path, count: int
                      ) -> dict[tuple[str, str, str], list[Strip]]:
    """Up to ``count`` strips per board, for clips whose generated video is in ``videos``."""
    from ..data import open_dataset

    strips: dict[tuple[str, str, str], list[Strip]] = {}
    for board in sorted({c.board for c in cells}):
        dataset_name, split, task = board
        role = ROLE_OF_TASK.get(task, "speaker")
        try:
            dataset = open_dataset(dataset_name)
        except Exception:  # the dataset may not exist on this machine: no strips, not an error
            continue
        for sample in dataset.samples(split, task):  # type: ignore[arg-type]
            if len(strips.get(board, [])) >= count:
                break
            generated = videos / f"{sample.uuid}.{role}.mp4"
            if not generated.is_file():
                continue
            n = sample.n_frames
            indices = sorted({0, n // 4, n // 2, (3 * n) // 4})
            gen = _frames_at(generated, indices)
            gt = _frames_at(dataset.root / "videos" / f"{sample.uuid}.{role}.mp4", indices)
            if gen is None or gt is None:
                continue
            caption = f"{sample.uuid} ({role}), frames {', '.join(map(str, indices))}: rows GT / generated / |difference| x4"
            strips.setdefault(board, []).append(Strip(caption, strip_png(gt, gen)))
    return strips
