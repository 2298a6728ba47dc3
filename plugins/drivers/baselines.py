"""Reference drivers that need no training: zero motion and ground truth."""

from __future__ import annotations

import torch

from bench.contracts import DriverBatch
from bench.errors import ConfigError


class StaticDriver:
    """Repeats the first frame's coefficients for every frame (zero-motion baseline)."""

    tasks = frozenset({"talking", "listening"})
    model = None

    def predict(self, batch: DriverBatch) -> torch.Tensor:
        steps = batch.audio.shape[1]
        return batch.init[:, None, :].expand(-1, steps, -1).clone()


class GroundTruthDriver:
    """Returns the ground-truth coefficients: what a perfect driver would produce."""

    tasks = frozenset({"talking", "listening"})
    model = None

    def predict(self, batch: DriverBatch) -> torch.Tensor:
        if batch.gt is None:
            raise ConfigError(
                "driver 'gt' needs ground-truth coefficients, and this dataset has none",
                fix="use a dataset with recons/ or video_feats/, or another driver",
            )
        return batch.gt.clone()
