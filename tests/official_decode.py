"""The official ViCo scripts' decoding, written out for tests: cv2.VideoCapture + BGR->RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def cv2_frames_uint8(path: Path) -> np.ndarray:
    """(N,H,W,3) uint8 RGB frames of ``path``, read as the official scripts read them."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[:, :, ::-1].copy())
    cap.release()
    return np.stack(frames)


def cv2_frames(path: Path) -> torch.Tensor:
    """(N,3,H,W) float in [0,1]: :func:`cv2_frames_uint8` as a tensor."""
    return torch.from_numpy(cv2_frames_uint8(path)).permute(0, 3, 1, 2).float() / 255.0
