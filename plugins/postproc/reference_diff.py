"""``reference-diff``: a weight-free background segmenter for tests and weightless setups.

A pixel is background when the frame still looks like the reference there: the
channel-mean absolute difference, smoothed over a ``blur`` x ``blur`` box (tolerates
small shifts and codec noise), is below ``threshold``. Morphological opening then
closing of the foreground (``morph`` x ``morph`` square, via max-pooling) removes
specks and fills holes. The reference itself is all background, so with fusion the
generated frames alone decide what is pasted. Far weaker than U2Net where the
renderer distorts the background: it cannot tell distortion from motion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _dilate(mask: torch.Tensor, size: int) -> torch.Tensor:
    return F.max_pool2d(F.pad(mask, [size // 2, (size - 1) // 2] * 2, mode="replicate"), size, stride=1)


def _erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    return 1 - _dilate(1 - mask, size)


class ReferenceDiffSegmenter:
    """``segment(frames (B,3,H,W) in [0,1]) -> (B,1,H,W)`` in {0,1}, 1 = background.

    Needs ``set_reference(reference (3,H,W))`` first (fusion calls it in ``start_clip``).
    """

    segmenter_name = "reference-diff"

    def __init__(self, threshold: float = 0.08, blur: int = 5, morph: int = 5,
                 device: str | torch.device = "cpu") -> None:
        self.threshold = threshold
        self.blur = blur
        self.morph = morph
        self.device = torch.device(device)
        self._reference: torch.Tensor | None = None

    def set_reference(self, reference: torch.Tensor) -> None:
        self._reference = reference.to(self.device, torch.float32)

    def segment(self, frames: torch.Tensor) -> torch.Tensor:
        if self._reference is None:
            raise RuntimeError("reference-diff segmenter: call set_reference(reference) first")
        diff = (frames.to(self.device, torch.float32) - self._reference).abs().mean(1, keepdim=True)
        if self.blur > 1:
            diff = F.avg_pool2d(F.pad(diff, [self.blur // 2, (self.blur - 1) // 2] * 2, mode="replicate"),
                                self.blur, stride=1)
        foreground = (diff > self.threshold).float()
        if self.morph > 1:
            foreground = _dilate(_erode(foreground, self.morph), self.morph)  # opening
            foreground = _erode(_dilate(foreground, self.morph), self.morph)  # closing
        return 1 - foreground
