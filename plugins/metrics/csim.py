"""CSIM: identity cosine similarity between generated and ground-truth frames (higher is better).

The challenge's ``compute_csim.py`` embeds every ground-truth and generated frame
of the split with ArcFace, then prints
``sklearn.metrics.pairwise.cosine_similarity(gt_feats, pd_feats).mean()``: the
mean over *all pairs* (every GT frame against every generated frame of the
split), not over aligned frame pairs. With unit embeddings that mean factorises
exactly::

    csim = (1/N^2) sum_i sum_j <g_i, p_j> = <(1/N) sum_i g_i, (1/N) sum_j p_j>

so the state is the two embedding sums and N, which merge over clips and shards
exactly. ``csim_paired`` (mean cosine of aligned frame pairs, the usual
definition in the talking-head literature) is reported beside it, with the
number of frames where the embedder found no face (``csim_no_face_frames``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.errors import InputError
from bench.metric import Metric

from ._imageops import cached_array, check_frames, content_key, to_uint8_hwc
from .face_embed import shared_embedder

if TYPE_CHECKING:
    import torch


class IdentitySimilarity(Metric):
    """CSIM with a pluggable face embedder (``bench list face_embedder``).

    Args:
        embedder: ``dlib`` (offline, default) or ``arcface`` (the challenge's network).
        **embedder_options: passed to the embedder (``weights=PATH`` for arcface).

    Example:
        >>> metric = bench.load("metric", "csim", embedder="dlib")   # doctest: +SKIP
        >>> metric.update(frames=fake, gt_frames=real)                # doctest: +SKIP
        >>> metric.compute()  # {'csim': 0.93, 'csim_paired': 0.95, ...}  # doctest: +SKIP
    """

    name: ClassVar[str] = "csim"
    higher_is_better: ClassVar[bool] = True
    inputs: ClassVar[frozenset[str]] = frozenset({"frames", "gt_frames"})
    frame_level: ClassVar[bool] = True
    version: ClassVar[str] = "1"

    def __init__(self, embedder: str = "dlib", **embedder_options: Any) -> None:
        import torch

        super().__init__()
        self.embedder_name = embedder
        self.embedder = shared_embedder(embedder, **embedder_options)
        dim = int(self.embedder.dim)
        self.add_state("sum_gt", torch.zeros(dim, dtype=torch.float64), "sum")
        self.add_state("sum_pd", torch.zeros(dim, dtype=torch.float64), "sum")
        self.add_state("paired_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("n_frames", torch.zeros((), dtype=torch.int64), "sum")
        self.add_state("no_face", torch.zeros((), dtype=torch.int64), "sum")
        self.add_state("no_face_gt", torch.zeros((), dtype=torch.int64), "sum")

    @property
    def label(self) -> str:
        return f"embedder={self.embedder_name}"

    @property
    def backend(self) -> str:
        return str(getattr(self.embedder, "backend", self.embedder_name))

    def gt_embeddings(
        self, gt_frames: torch.Tensor, gt_key: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """((B,D) unit embeddings, (B,) face found) of ground-truth frames, cached by content key."""

        def compute() -> np.ndarray:
            embeddings, found = self.embedder.embed_with_status(gt_frames)
            return np.concatenate([embeddings, found[:, None].astype(np.float64)], axis=1)

        key = gt_key or content_key(to_uint8_hwc(gt_frames))
        dim = int(self.embedder.dim)
        packed = cached_array(
            ("face_embed", self.embedder.cache_id), key, (gt_frames.shape[0], dim + 1), compute
        )
        return packed[:, :dim], packed[:, dim] > 0.5

    def update(  # type: ignore[override]
        self,
        frames: torch.Tensor,
        gt_frames: torch.Tensor,
        gt_key: str | None = None,
        **_: object,
    ) -> None:
        """Add a batch of aligned generated and ground-truth frames, (B,3,H,W) in [0,1].

        ``gt_key`` (optional) is a content key of the ground-truth batch under which
        its embeddings are cached.
        """
        import torch

        check_frames(self.name, frames, gt_frames)
        pd, pd_found = self.embedder.embed_with_status(frames)
        gt, gt_found = self.gt_embeddings(gt_frames, gt_key)
        self._state["sum_gt"] += torch.from_numpy(gt.sum(axis=0))
        self._state["sum_pd"] += torch.from_numpy(pd.sum(axis=0))
        self._state["paired_sum"] += float(np.einsum("bd,bd->", pd, gt))
        self._state["n_frames"] += len(pd)
        self._state["no_face"] += int(np.count_nonzero(~pd_found))
        self._state["no_face_gt"] += int(np.count_nonzero(~gt_found))

    def _compute(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        n = int(state["n_frames"])
        if n == 0:
            raise InputError(None, f"{self.name}: no frames were scored (empty split?)")
        all_pairs = float(state["sum_gt"].double() @ state["sum_pd"].double()) / (n * n)
        return {
            self.name: all_pairs,
            f"{self.name}_paired": float(state["paired_sum"]) / n,
            f"{self.name}_no_face_frames": float(state["no_face"]),
            f"{self.name}_no_face_gt_frames": float(state["no_face_gt"]),
        }
