"""68-point facial landmark detectors: the backends of ``lmd`` and ``lmd-full``.

Every landmarker follows one contract::

    detect(frames (B,3,H,W) float in [0,1]) -> (B,68,2) float64 pixels (x, y), NaN rows
                                                where no face was found

and carries a ``cache_id`` naming its backend, version, model file and options,
so cached ground-truth landmarks are never reused across backends or models.
Both backends take the *highest-scoring* face of each frame, which is what
``face_alignment``'s ``get_landmarks(...)[0]`` returns in the challenge's script.

* ``fan``: face-alignment's 2D-FAN-4 with the S3FD detector, exactly the
  challenge's configuration (``flip_input=True``); weights come from torch's hub
  cache ``$TORCH_HOME/hub/checkpoints`` or are downloaded on first use.
* ``dlib``: dlib's HOG face detector and its 68-point shape predictor (the same
  iBUG-300W scheme) read from the ``face_recognition_models`` package: offline,
  CPU-only, no download.
"""

from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from bench.errors import ConfigError, MissingDependencyError
from bench.registry import WeightsStatus

from ._imageops import content_key, to_uint8_hwc

if TYPE_CHECKING:
    import torch

N_POINTS = 68


class Landmarker(Protocol):
    """What ``lmd`` needs from a landmark backend."""

    cache_id: str

    def detect(self, frames: torch.Tensor) -> np.ndarray:
        """(B,3,H,W) in [0,1] -> (B,68,2) pixels, NaN where no face."""
        ...


# --------------------------------------------------------------------------- dlib


def face_recognition_models_file(name: str) -> Path:
    """Path of a model file shipped in the ``face_recognition_models`` package.

    The package's own helpers import ``pkg_resources`` (gone from modern
    setuptools), so the file is located from the package's folder without
    importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise MissingDependencyError(
        f"dlib model file {name!r} not found: the 'face_recognition_models' package is "
        + ("installed without it" if folders else "not installed"),
        fix="pip install dlib-bin face_recognition_models",
    )


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise MissingDependencyError(
            "the dlib landmark/identity backends need the 'dlib' module",
            fix="pip install dlib-bin face_recognition_models",
        ) from exc
    return dlib




def file_digest(path: Path) -> str:
    """SHA-256 prefix of a model file (memoised on disk by path, size and mtime)."""
    from bench.paths import memoised_file_sha256

    return memoised_file_sha256(path)[:16]


class _Memo:
    """Remembers the last few batches' results by content, so ``lmd`` and ``lmd-full``
    (which share one landmarker) detect each batch of generated frames once."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def _check_upsample(upsample: int | str) -> int | str:
    if upsample == "auto":
        return "auto"
    try:
        value = int(upsample)
    except (TypeError, ValueError):
        value = -1
    if value < 0:
        raise ConfigError(f"upsample must be 'auto' or a non-negative integer, got {upsample!r}")
    return value


def best_face(detector: Any, image: np.ndarray, upsample: int | str) -> Any | None:
    """The highest-scoring dlib face box in an (H,W,3) uint8 image, or None."""
    for level in (0, 1) if upsample == "auto" else (int(upsample),):
        boxes, scores, _ = detector.run(image, level, 0.0)
        if len(boxes):
            return boxes[int(np.argmax(scores))]
    return None


class _PerImageLandmarker:
    """Runs a per-image detector over a batch, remembering recent batches by content."""

    def __init__(self) -> None:
        self._memo = _Memo()

    def _detect_one(self, image: np.ndarray) -> np.ndarray | None:
        """(H,W,3) uint8 RGB -> (68,2) pixels of the first face, or None."""
        raise NotImplementedError

    def detect(self, frames: torch.Tensor) -> np.ndarray:
        """(B,3,H,W) in [0,1] -> (B,68,2) float64 pixels, NaN where no face."""
        images = to_uint8_hwc(frames)
        key = content_key(images)
        cached = self._memo.get(key)
        if cached is not None:
            return cached.copy()
        out = np.full((len(images), N_POINTS, 2), np.nan)
        for i, image in enumerate(images):
            points = self._detect_one(image)
            if points is not None:
                out[i] = points
        self._memo.put(key, out)
        return out.copy()


class DlibLandmarker(_PerImageLandmarker):
    """dlib HOG face detector + 68-point shape predictor (offline, CPU).

    Args:
        upsample: times the HOG detector upsamples the frame before searching:
            0 finds faces from ~80 px, 1 (face_recognition's default) from ~40 px
            at ~3x the cost; ``"auto"`` (default) tries 0 and retries with 1
            only on frames where no face was found.
        predictor: path of a ``shape_predictor_68_face_landmarks.dat``; default:
            the one in ``face_recognition_models``.
    """

    version: ClassVar[str] = "1"

    def __init__(self, upsample: int | str = "auto", predictor: str | None = None) -> None:
        dlib = _import_dlib()
        path = (
            Path(predictor)
            if predictor
            else face_recognition_models_file("shape_predictor_68_face_landmarks.dat")
        )
        if not path.is_file():
            raise MissingDependencyError(
                f"{path}: dlib 68-point shape predictor not found",
                fix="pass predictor=PATH or pip install face_recognition_models",
            )
        self.upsample = _check_upsample(upsample)
        self._path = path
        self._models: tuple[Any, Any] | None = None  # loaded on first detect: planning
        # only needs cache_id and backend, and the predictor takes ~0.5 s to read
        self.cache_id = f"dlib-v{self.version}-{file_digest(path)}-up{self.upsample}"
        self.backend = f"dlib {getattr(dlib, '__version__', '?')} HOG + 68-point predictor"
        super().__init__()

    def _load(self) -> tuple[Any, Any]:
        if self._models is None:
            dlib = _import_dlib()
            self._models = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(self._path)))
        return self._models

    def _detect_one(self, image: np.ndarray) -> np.ndarray | None:
        detector, predictor = self._load()
        best = best_face(detector, image, self.upsample)
        if best is None:
            return None
        return np.asarray([(p.x, p.y) for p in predictor(image, best).parts()], dtype=np.float64)


def dlib_weights() -> WeightsStatus:
    try:
        path = face_recognition_models_file("shape_predictor_68_face_landmarks.dat")
    except MissingDependencyError as exc:
        return WeightsStatus(False, "face_recognition_models package", exc.fix or "")
    return WeightsStatus(True, str(path))


# --------------------------------------------------------------------------- FAN

#: The files face-alignment downloads into torch's hub cache, and from where.
FAN_FILES: dict[str, str] = {
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}


def torch_hub_checkpoints() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's default ``~/.cache/torch``), without importing torch."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def fan_weights() -> WeightsStatus:
    folder = torch_hub_checkpoints()
    missing = [name for name in FAN_FILES if not (folder / name).is_file()]
    if not missing:
        return WeightsStatus(True, str(folder))
    how = "; ".join(f"download {FAN_FILES[name]} to {folder / name}" for name in missing)
    return WeightsStatus(False, str(folder), f"downloaded on first use, or: {how}")


class FanLandmarker(_PerImageLandmarker):
    """face-alignment's 2D-FAN-4 (+ S3FD detector), the challenge's landmarker.

    Args:
        device: ``"cpu"``, ``"cuda"``, ... or ``"auto"`` (CUDA when available).
        flip_input: average with the horizontally flipped crop (the challenge: True).
    """

    version: ClassVar[str] = "1"

    def __init__(self, device: str = "auto", flip_input: bool = True) -> None:
        import torch

        try:
            import face_alignment
        except ImportError as exc:
            raise MissingDependencyError(
                "the 'fan' landmark backend needs the 'face_alignment' package",
                fix="pip install face-alignment",
            ) from exc
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        landmarks_type = getattr(face_alignment.LandmarksType, "TWO_D", None)
        if landmarks_type is None:  # face-alignment < 1.4 spelled it _2D
            landmarks_type = face_alignment.LandmarksType._2D
        kwargs: dict[str, Any] = {"device": device, "flip_input": flip_input}
        # torch.compile buys nothing for per-face calls and costs minutes on CPU.
        kwargs["compile"] = False
        try:
            self._fa = face_alignment.FaceAlignment(landmarks_type, **kwargs)
        except TypeError:  # versions without the compile option
            kwargs.pop("compile")
            self._fa = face_alignment.FaceAlignment(landmarks_type, **kwargs)
        except (OSError, RuntimeError, ValueError) as exc:
            status = fan_weights()
            raise MissingDependencyError(
                f"could not load face-alignment's FAN/S3FD weights ({type(exc).__name__}: {exc}); "
                f"they are looked up in {status.where}",
                fix=status.how or "check the files in that folder (a partial download?)",
            ) from exc
        self.device = device
        self.flip_input = flip_input
        self.cache_id = (
            f"fan-v{self.version}-fa{getattr(face_alignment, '__version__', '?')}"
            f"-flip{int(flip_input)}"
        )
        self.backend = (
            f"face-alignment {getattr(face_alignment, '__version__', '?')} 2D-FAN-4 + S3FD"
        )
        super().__init__()

    def _detect_one(self, image: np.ndarray) -> np.ndarray | None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No faces were detected." is counted instead
            found = self._fa.get_landmarks_from_image(image)
        return np.asarray(found[0], dtype=np.float64)[:, :2] if found else None


# --------------------------------------------------------------------------- sharing

_SHARED: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}


def shared_landmarker(backend: str, **options: Any) -> Landmarker:
    """One landmarker per (backend, options) per process, so metrics share models and memos."""
    import bench

    key = (backend, tuple(sorted(options.items())))
    if key not in _SHARED:
        _SHARED[key] = bench.load("landmarker", backend, **options)
    return _SHARED[key]
