"""Coefficient feature distances: ``expfd`` (64 expression), ``anglefd`` (3 angles), ``transfd`` (3 translations).

The challenge defines ``FD = 1 / (N * D) * sum |phi(x) - phi(x')|`` over all N
frames of all videos of a split and the D dimensions of one coefficient group,
where ``phi`` re-extracts 3DMM coefficients from the generated (``x``) and
ground-truth (``x'``) videos with Deep3DFaceRecon.

Who supplies ``phi`` is a *coefficient extractor* (component kind
``coeff_extractor``):

* ``driver`` (built in): no reconstruction; the driver's predicted coefficients
  stand in for ``phi(x)`` and the ground-truth coefficients for ``phi(x')``.
  This measures the driver, not the rendered video, so values carry the label
  ``source=driver`` and are not comparable to the leaderboard's video-based FDs.
* a 3D reconstructor plugin with ``source = "video"`` and
  ``extract(frames (B,3,H,W) in [0,1]) -> (B,73)`` (driver order): the metric then
  scores frames batch by batch (``source=video:<name>``), as the challenge does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from bench import coeffs as C
from bench.errors import ConfigError, InputError
from bench.metric import Metric

from ._imageops import check_frames

if TYPE_CHECKING:
    import torch


class CoeffExtractor(Protocol):
    """A source of ``phi``: ``source`` is ``"driver"`` or ``"video"``.

    Video extractors also implement ``extract(frames (B,3,H,W) in [0,1]) -> (B,73)``
    float coefficients in driver order (see :mod:`bench.coeffs`).
    """

    source: str


class DriverCoefficients:
    """The ``driver`` extractor: FDs on the driver's own coefficients (no video analysis)."""

    source = "driver"
    backend = "driver coefficients (no 3D reconstruction)"


class _FDState(Metric):
    """Shared state and pooling: sum of absolute differences over values."""

    higher_is_better: ClassVar[bool] = False
    version: ClassVar[str] = "1"
    part: ClassVar[slice] = C.EXP

    def __init__(self) -> None:
        import torch

        super().__init__()
        self.add_state("abs_sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("n_values", torch.zeros((), dtype=torch.int64), "sum")
        self.add_state("n_frames", torch.zeros((), dtype=torch.int64), "sum")

    def _add(self, phi_pd: torch.Tensor, phi_gt: torch.Tensor) -> None:
        """Accumulate (T,73) predicted vs ground-truth coefficients (driver order)."""
        diff = (phi_pd[:, self.part].double() - phi_gt[:, self.part].double()).abs()
        self._state["abs_sum"] += diff.sum()
        self._state["n_values"] += diff.numel()
        self._state["n_frames"] += int(phi_pd.shape[0])

    def _compute(self, state: Mapping[str, torch.Tensor]) -> float:
        n = int(state["n_values"])
        if n == 0:
            raise InputError(None, f"{self.name}: no frames were scored (empty split?)")
        return float(state["abs_sum"]) / n


def _check_coeffs(metric: str, coeffs: torch.Tensor | None, gt_coeffs: torch.Tensor | None) -> None:
    import torch

    for role, array in (("predicted", coeffs), ("ground-truth", gt_coeffs)):
        if array is None:
            raise InputError(
                None,
                f"{metric}: the clip has no {role} coefficients",
                fix="FDs need the dataset's ground-truth coefficients; drop expfd/anglefd/transfd for this split",
            )
        if array.ndim != 2 or array.shape[1] != C.N_COEFFS:
            raise InputError(
                None,
                f"{metric}: {role} coefficients must be (T,{C.N_COEFFS}), got {tuple(array.shape)}",
            )
        if not torch.isfinite(array).all():
            raise InputError(None, f"{metric}: {role} coefficients contain NaN or infinite values")
    assert coeffs is not None and gt_coeffs is not None
    if coeffs.shape[0] != gt_coeffs.shape[0]:
        raise InputError(
            None,
            f"{metric}: {coeffs.shape[0]} predicted frames vs {gt_coeffs.shape[0]} ground-truth frames",
            fix="the driver must predict one coefficient row per ground-truth frame",
        )
    if coeffs.shape[0] == 0:
        raise InputError(None, f"{metric}: empty clip (0 frames)")


class DriverFD(_FDState):
    """FD on driver coefficients: one ``update`` per clip with (T,73) ``coeffs`` and ``gt_coeffs``."""

    inputs: ClassVar[frozenset[str]] = frozenset({"coeffs", "gt_coeffs"})
    frame_level: ClassVar[bool] = False

    def __init__(self, extractor: CoeffExtractor | None = None) -> None:
        super().__init__()
        self.extractor = extractor or DriverCoefficients()

    @property
    def label(self) -> str:
        return "source=driver"

    @property
    def backend(self) -> str:
        return DriverCoefficients.backend

    def update(self, coeffs: torch.Tensor, gt_coeffs: torch.Tensor, **_: object) -> None:  # type: ignore[override]
        """Add one clip: predicted and ground-truth (T,73) coefficients, driver order, denormalised."""
        _check_coeffs(self.name, coeffs, gt_coeffs)
        self._add(coeffs.detach().cpu(), gt_coeffs.detach().cpu())


class VideoFD(_FDState):
    """FD on coefficients re-extracted from generated and ground-truth frames, batch by batch."""

    inputs: ClassVar[frozenset[str]] = frozenset({"frames", "gt_frames"})
    frame_level: ClassVar[bool] = True

    def __init__(self, extractor: Any, extractor_name: str) -> None:
        super().__init__()
        self.extractor = extractor
        self.extractor_name = extractor_name

    @property
    def label(self) -> str:
        return f"source=video:{self.extractor_name}"

    @property
    def backend(self) -> str:
        return str(getattr(self.extractor, "backend", self.extractor_name))

    def update(self, frames: torch.Tensor, gt_frames: torch.Tensor, **_: object) -> None:  # type: ignore[override]
        """Add a batch of aligned generated and ground-truth frames, (B,3,H,W) in [0,1]."""
        check_frames(self.name, frames, gt_frames)
        phi_pd = self.extractor.extract(frames).detach().cpu()
        phi_gt = self.extractor.extract(gt_frames).detach().cpu()
        _check_coeffs(self.name, phi_pd, phi_gt)
        self._add(phi_pd, phi_gt)


class ExpFD(DriverFD):
    """``expfd``: mean |exp - exp_gt| over the 64 expression coefficients (driver source)."""

    name: ClassVar[str] = "expfd"
    part: ClassVar[slice] = C.EXP


class AngleFD(DriverFD):
    """``anglefd``: mean |angle - angle_gt| over the 3 rotation angles, radians (driver source)."""

    name: ClassVar[str] = "anglefd"
    part: ClassVar[slice] = C.ANGLE


class TransFD(DriverFD):
    """``transfd``: mean |trans - trans_gt| over the 3 translations (driver source)."""

    name: ClassVar[str] = "transfd"
    part: ClassVar[slice] = C.TRANS


_DRIVER_CLASSES: dict[str, type[DriverFD]] = {
    "expfd": ExpFD,
    "anglefd": AngleFD,
    "transfd": TransFD,
}
_VIDEO_CLASSES: dict[str, type[VideoFD]] = {
    name: type(
        f"Video{cls.__name__}", (VideoFD,), {"name": name, "part": cls.part, "__doc__": cls.__doc__}
    )
    for name, cls in _DRIVER_CLASSES.items()
}


def coefficient_distance(
    metric: str, extractor: str = "driver", **extractor_options: Any
) -> Metric:
    """Build ``expfd``/``anglefd``/``transfd`` on the coefficients of ``extractor``.

    Args:
        metric: ``"expfd"``, ``"anglefd"`` or ``"transfd"``.
        extractor: a ``coeff_extractor`` name (``bench list coeff_extractor``);
            ``driver`` (default) scores the driver's coefficients per clip.
        **extractor_options: passed to the extractor.
    """
    import bench

    if metric not in _DRIVER_CLASSES:
        raise ConfigError(
            f"unknown coefficient distance {metric!r}; expected one of {sorted(_DRIVER_CLASSES)}"
        )
    source = bench.load("coeff_extractor", extractor, **extractor_options)
    kind = getattr(source, "source", None)
    if kind == "driver":
        return _DRIVER_CLASSES[metric](source)
    if kind == "video":
        if not callable(getattr(source, "extract", None)):
            raise ConfigError(
                f"coeff_extractor {extractor!r} has source='video' but no extract(frames)"
            )
        return _VIDEO_CLASSES[metric](source, extractor)
    raise ConfigError(
        f"coeff_extractor {extractor!r} must declare source='driver' or source='video', got {kind!r}"
    )
