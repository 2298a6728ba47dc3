"""Border padding: ask the renderer to sample outside the image with ``padding_mode='border'``.

A warping renderer that samples outside the source with zero padding paints black
wedges at the frame edges when the head turns; repeating the border pixels instead
removes them (the paper's enhanced renderer). The repair happens inside the renderer,
so the post-processor itself passes frames through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


class BorderPostProcessor:
    """Requests ``padding_mode='border'`` from the renderer; frames pass through unchanged."""

    renderer_options: Mapping[str, Any] = {"padding_mode": "border"}

    def __init__(self, device: str | torch.device | None = None) -> None:
        del device  # accepted like every post-processor; nothing is computed here

    def start_clip(self, reference: torch.Tensor) -> None:
        """Nothing to reset: border padding has no per-clip state."""

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        """(b,3,H,W) -> the same tensor."""
        return frames

    def describe(self) -> dict[str, Any]:
        return {"renderer_options": dict(self.renderer_options)}
