"""The metric contract: stateful metrics with declared, mergeable state.

A metric declares each piece of state with how it merges (``"sum"`` adds,
``"cat"`` concatenates along dim 0), in the manner of torchmetrics'
``add_state``. That one declaration gives the harness everything it needs:

* per-clip states (reset, update with one clip, :meth:`Metric.state`),
* the pooled value over a split (:meth:`Metric.merge` then
  :meth:`Metric.compute_state`), exactly as the challenge pools over frames,
* shards of a cell combined exactly, and bootstrap resamples over clips.

Subclasses implement ``update(**inputs)`` and ``_compute(state)``; the inputs a
metric needs are named in ``inputs`` (see :data:`INPUTS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import torch

Reduce = Literal["sum", "cat"]
State = dict[str, "torch.Tensor"]

#: What the harness can hand a metric's ``update``.
INPUTS: dict[str, str] = {
    "frames": "(b,3,H,W) generated frames in [0,1]",
    "gt_frames": "(b,3,H,W) ground-truth frames in [0,1], aligned with frames",
    "coeffs": "(T,73) driver coefficients of the clip, driver order",
    "gt_coeffs": "(T,73) ground-truth coefficients of the clip, driver order",
    "reference": "(3,H,W) the clip's reference image in [0,1]",
    "audio": "(T,F) audio features of the clip",
    "gt_key": "str: content key of this gt_frames batch (video hash + frame range), so a "
    "metric can cache ground-truth-side work (features, landmarks) across cells",
}


class Metric:
    """Base class for metrics with mergeable state.

    Class attributes:
        name: registered name (set by the registry too).
        higher_is_better: direction, used by ranking and gates.
        inputs: which of :data:`INPUTS` ``update`` takes.
        frame_level: True when ``update`` is called batch by batch with frames;
            False when it is called once per clip with whole-clip tensors.
        version: bump when values change.
        label: extra provenance shown beside the value (e.g. ``source=driver``).
    """

    name: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = True
    inputs: ClassVar[frozenset[str]] = frozenset({"frames", "gt_frames"})
    frame_level: ClassVar[bool] = True
    version: ClassVar[str] = "1"
    tasks: ClassVar[tuple[str, ...]] = ("talking", "listening")
    extra_directions: ClassVar[dict[str, bool | None]] = {}

    def __init__(self) -> None:
        self._defaults: dict[str, tuple[torch.Tensor, Reduce]] = {}
        self._state: State = {}

    @property
    def label(self) -> str:
        return ""

    @property
    def backend(self) -> str:
        """The implementation behind the numbers (recorded in every result)."""
        return "builtin"

    # state -----------------------------------------------------------------
    def add_state(self, name: str, default: torch.Tensor, reduce: Reduce) -> None:
        if reduce not in ("sum", "cat"):
            raise ValueError(f"reduce must be 'sum' or 'cat', got {reduce!r}")
        self._defaults[name] = (default.clone(), reduce)
        self._state[name] = default.clone()

    def reductions(self) -> dict[str, Reduce]:
        """How each state field merges: ``"sum"`` or ``"cat"``."""
        return {name: reduce for name, (_, reduce) in self._defaults.items()}

    def reset(self) -> None:
        self._state = {k: d.clone() for k, (d, _) in self._defaults.items()}

    def state(self) -> State:
        """A detached copy of the current state (on CPU)."""
        return {k: v.detach().cpu().clone() for k, v in self._state.items()}

    def stored_state(self) -> State:
        """This clip's state in the form results are stored and shipped in.

        The default is :meth:`state`; a metric with a bulky state may return a smaller
        equivalent (FID keeps a short clip's features instead of 2048x2048 moments).
        Every consumer passes stored states through :meth:`restore_state` first.
        """
        return self.state()

    def restore_state(self, stored: Mapping[str, torch.Tensor]) -> State:
        """The mergeable state of a :meth:`stored_state` (the default: as it is)."""
        return dict(stored)

    def merge(self, states: Sequence[Mapping[str, torch.Tensor]]) -> State:
        """Combine states (of clips, shards) by each field's declared reduction."""
        import torch

        if not states:
            raise ValueError(f"{self.name}: nothing to merge (empty split?)")
        merged: State = {}
        for key, (default, reduce) in self._defaults.items():
            parts = [s[key] for s in states]
            if reduce == "sum":
                total = parts[0].clone()
                for part in parts[1:]:
                    total = total + part
                merged[key] = total
            else:
                merged[key] = torch.cat([p.reshape(-1, *default.shape[1:]) for p in parts], dim=0)
        return merged

    def directions(self) -> dict[str, bool | None]:
        """Direction of each output key: the metric's own name is ranked and gated;
        other keys (``lmd_no_face_frames``, ``csim_paired``...) are diagnostics (None)
        unless a subclass declares them in ``extra_directions``."""
        return {self.name: self.higher_is_better, **self.extra_directions}

    def compute(self) -> dict[str, float]:
        return self.compute_state(self._state)

    def compute_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Values from a state. Keys are metric names (usually just ``self.name``)."""
        value = self._compute(state)
        if isinstance(value, Mapping):
            return {str(k): float(v) for k, v in value.items()}
        return {self.name: float(value)}

    # to implement -----------------------------------------------------------
    def update(self, **inputs: Any) -> None:
        raise NotImplementedError

    def _compute(self, state: Mapping[str, torch.Tensor]) -> float | Mapping[str, float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
