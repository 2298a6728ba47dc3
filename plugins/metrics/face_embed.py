"""Identity embedders: the backends of ``csim``.

Contract: ``embed(frames (B,3,H,W) in [0,1]) -> (B,D) float64 unit vectors``;
``embed_with_status`` also returns a (B,) bool "a face was detected" mask where
the backend detects faces, and ``dim`` gives D.

* ``arcface``: ArcFace iresnet100 (insightface ``arcface_torch`` layout), on the
  *whole frame* resized to 112x112 and scaled to [-1,1], as the challenge's
  ``compute_csim.py`` does (no face detection or alignment). Weights from a
  path (``weights=``) or ``$BENCH_HOME/weights/arcface/r100.pth``.
* ``dlib``: dlib's 128-d ResNet face descriptor (``face_recognition_models``),
  offline. It needs a face box: the HOG detector's best face, or the whole frame
  when none is found (counted). Aligned with dlib's 5-point predictor.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bench.errors import InputError, MissingDependencyError
from bench.registry import WeightsStatus

from ._imageops import to_uint8_hwc
from .landmarks import (
    _check_upsample,
    _import_dlib,
    best_face,
    face_recognition_models_file,
    file_digest,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class DlibFaceEmbedder:
    """dlib ``dlib_face_recognition_resnet_model_v1`` (128-d), offline.

    Args:
        upsample: HOG detector upsampling, as for the ``dlib`` landmarker (default ``"auto"``).
    """

    version: ClassVar[str] = "1"
    dim: ClassVar[int] = 128

    def __init__(self, upsample: int | str = "auto") -> None:
        dlib = _import_dlib()
        self.upsample = _check_upsample(upsample)
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(
            str(face_recognition_models_file("shape_predictor_5_face_landmarks.dat"))
        )
        self._net = dlib.face_recognition_model_v1(
            str(face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat"))
        )
        self._rectangle = dlib.rectangle
        digests = "-".join(
            file_digest(face_recognition_models_file(name))[:8]
            for name in (
                "shape_predictor_5_face_landmarks.dat",
                "dlib_face_recognition_resnet_model_v1.dat",
            )
        )
        self.cache_id = f"dlib-v{self.version}-{digests}-up{self.upsample}"
        self.backend = f"dlib {getattr(dlib, '__version__', '?')} ResNet face descriptor (128-d)"

    def embed_with_status(self, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(B,3,H,W) in [0,1] -> ((B,128) unit vectors, (B,) bool face detected)."""
        images = to_uint8_hwc(frames)
        out = np.zeros((len(images), self.dim))
        found = np.zeros(len(images), dtype=bool)
        for i, image in enumerate(images):
            box = best_face(self._detector, image, self.upsample)
            if box is not None:
                found[i] = True
            else:  # talking-head frames are face crops: the frame itself is a fair box
                box = self._rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1)
            shape = self._shape(image, box)
            out[i] = np.asarray(self._net.compute_face_descriptor(image, shape), dtype=np.float64)
        return _unit(out), found

    def embed(self, frames: torch.Tensor) -> np.ndarray:
        return self.embed_with_status(frames)[0]


def dlib_embedder_weights() -> WeightsStatus:
    try:
        path = face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat")
    except MissingDependencyError as exc:
        return WeightsStatus(False, "face_recognition_models package", exc.fix or "")
    return WeightsStatus(True, str(path))


# --------------------------------------------------------------------------- ArcFace


def build_iresnet(layers: tuple[int, ...] = (3, 13, 30, 3), num_features: int = 512) -> nn.Module:
    """ArcFace's improved ResNet ("iresnet"); (3,13,30,3) is iresnet100.

    Input (B,3,112,112) in [-1,1]; output (B,num_features) unnormalised. Module
    names follow insightface's ``arcface_torch`` so its checkpoints load directly.
    """
    import torch
    from torch import nn

    class Block(nn.Module):
        # Pre-activation style: BN -> conv -> BN -> PReLU -> conv(stride) -> BN, plus shortcut.
        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
            self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
            self.prelu = nn.PReLU(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
            self.downsample: nn.Module | None = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                    nn.BatchNorm2d(planes, eps=1e-5),
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
            shortcut = x if self.downsample is None else self.downsample(x)
            return out + shortcut

    class IResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
            self.prelu = nn.PReLU(64)
            inplanes = 64
            for index, (planes, blocks) in enumerate(
                zip((64, 128, 256, 512), layers, strict=True), start=1
            ):
                stage = [Block(inplanes, planes, 2)] + [
                    Block(planes, planes, 1) for _ in range(blocks - 1)
                ]
                self.add_module(f"layer{index}", nn.Sequential(*stage))
                inplanes = planes
            self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
            self.dropout = nn.Dropout(p=0.0)
            self.fc = nn.Linear(512 * 7 * 7, num_features)
            self.features = nn.BatchNorm1d(num_features, eps=1e-5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.prelu(self.bn1(self.conv1(x)))
            for index in range(1, 5):
                x = getattr(self, f"layer{index}")(x)
            x = self.dropout(torch.flatten(self.bn2(x), 1))
            return self.features(self.fc(x))

    return IResNet()


def default_arcface_weights() -> Path:
    from bench.paths import weights_dir

    return weights_dir("arcface") / "r100.pth"


def arcface_weights() -> WeightsStatus:
    path = default_arcface_weights()
    return WeightsStatus(
        path.is_file(),
        str(path),
        ""
        if path.is_file()
        else "place insightface's arcface_torch iresnet100 backbone.pth there "
        "(or pass weights=PATH)",
    )


def resize_112(images: np.ndarray) -> np.ndarray:
    """(B,H,W,3) uint8 -> (B,112,112,3) uint8 with bilinear interpolation as ``cv2.resize``.

    OpenCV is used when importable (it is a dependency of face-alignment), so the
    pixels match the challenge's script; otherwise torch's bilinear resampling
    (same sample positions, rounding may differ by one level).
    """
    try:
        import cv2
    except ImportError:
        import torch

        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        resized = torch.nn.functional.interpolate(
            tensor, size=(112, 112), mode="bilinear", align_corners=False
        )
        return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.stack(
        [cv2.resize(image, (112, 112), interpolation=cv2.INTER_LINEAR) for image in images]
    )


class ArcFaceEmbedder:
    """ArcFace iresnet100 on whole frames resized to 112x112 (the challenge's CSIM network).

    Args:
        weights: path of an ``arcface_torch`` iresnet100 state dict (``backbone.pth``);
            default ``$BENCH_HOME/weights/arcface/r100.pth``.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        batch_size: frames per forward pass.
    """

    version: ClassVar[str] = "1"
    dim: ClassVar[int] = 512

    def __init__(
        self, weights: str | None = None, device: str = "auto", batch_size: int = 64
    ) -> None:
        import torch

        path = Path(weights).expanduser() if weights else default_arcface_weights()
        if not path.is_file():
            raise MissingDependencyError(
                f"ArcFace iresnet100 weights not found at {path}",
                fix=f"download insightface's arcface_torch r100 backbone.pth and save it as "
                f"{default_arcface_weights()} (or pass weights=PATH); or use csim with embedder=dlib",
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(path, f"cannot read ArcFace weights: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        net = build_iresnet()
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise InputError(
                path,
                f"not an iresnet100 state dict: {len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})",
                fix="use insightface arcface_torch's r100 backbone.pth",
            )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.batch_size = int(batch_size)
        self.net = net.to(device).eval()
        self.backend = f"ArcFace iresnet100 ({path.name})"
        self.cache_id = f"arcface-v{self.version}-{file_digest(path)}"

    def embed(self, frames: torch.Tensor) -> np.ndarray:
        """(B,3,H,W) in [0,1] -> (B,512) unit vectors."""
        import torch

        images = resize_112(to_uint8_hwc(frames))
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)
        outputs = []
        with torch.inference_mode():
            for chunk in batch.split(self.batch_size):
                outputs.append(self.net(chunk.to(self.device)).double().cpu().numpy())
        return _unit(np.concatenate(outputs))

    def embed_with_status(self, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        embeddings = self.embed(frames)
        return embeddings, np.ones(len(embeddings), dtype=bool)


def shared_embedder(backend: str, **options: Any) -> Any:
    """One embedder per (backend, options) per process."""
    import bench

    key = (backend, tuple(sorted(options.items())))
    if key not in _SHARED:
        _SHARED[key] = bench.load("face_embedder", backend, **options)
    return _SHARED[key]


_SHARED: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
