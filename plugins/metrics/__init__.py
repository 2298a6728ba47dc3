"""Built-in metrics and their backends."""

from __future__ import annotations

from bench.hookspecs import hookimpl
from bench.registry import ComponentSpec

_BASE = "bench_plugins.metrics"

#: Pixel and distribution metrics compared with the ground-truth frames (SPEC 7).
_FRAME_METRICS: dict[str, ComponentSpec] = {
    "psnr": ComponentSpec(
        f"{_BASE}.psnr:PSNR",
        summary="PSNR (dB, higher better): piq's -10 log10(mse + 1e-8), mean over all frames",
        tasks=("talking", "listening"),
    ),
    "ssim": ComponentSpec(
        f"{_BASE}.ssim:SSIM",
        summary="SSIM (higher better): piq's gaussian 11/1.5 definition, mean over all frames",
        tasks=("talking", "listening"),
    ),
    "fid": ComponentSpec(
        f"{_BASE}.fid:FID",
        summary="FID (lower better): pytorch-fid InceptionV3 pool3, all GT vs all generated frames",
        requires=("pytorch_fid",),
        weights=f"{_BASE}.inception:weights_status",
        tasks=("talking", "listening"),
    ),
}


@hookimpl
def bench_add_metrics() -> dict[str, ComponentSpec]:
    specs: dict[str, ComponentSpec] = dict(_FRAME_METRICS)
    # metrics-b: landmark, coefficient, identity and sharpness metrics.
    specs.update(_metrics_b())
    return specs


def _metrics_b() -> dict[str, ComponentSpec]:
    fd = f"{_BASE}.fd:coefficient_distance"
    return {
        "lmd": ComponentSpec(
            f"{_BASE}.lmd:LandmarkDistance",
            summary="LipLMD: mean |landmark diff| over mouth points 48-67, pixels (landmarker=dlib|fan)",
        ),
        "lmd-full": ComponentSpec(
            f"{_BASE}.lmd:FullLandmarkDistance",
            summary="LMD over all 68 landmarks, pixels (landmarker=dlib|fan)",
        ),
        "expfd": ComponentSpec(
            fd,
            summary="mean |exp - exp_gt| over 64 expression coefficients (extractor=driver)",
            defaults={"metric": "expfd"},
        ),
        "anglefd": ComponentSpec(
            fd,
            summary="mean |angle - angle_gt| over 3 head angles (extractor=driver)",
            defaults={"metric": "anglefd"},
        ),
        "transfd": ComponentSpec(
            fd,
            summary="mean |trans - trans_gt| over 3 translations (extractor=driver)",
            defaults={"metric": "transfd"},
        ),
        "csim": ComponentSpec(
            f"{_BASE}.csim:IdentitySimilarity",
            summary="identity cosine similarity to the ground truth (embedder=dlib|arcface)",
        ),
        "cpbd": ComponentSpec(
            f"{_BASE}.cpbd:CPBD",
            summary="CPBD sharpness (Narvekar & Karam 2011), mean over generated frames",
        ),
    }


@hookimpl
def bench_add_landmarkers() -> dict[str, ComponentSpec]:
    return {
        "dlib": ComponentSpec(
            f"{_BASE}.landmarks:DlibLandmarker",
            summary="dlib HOG detector + 68-point predictor from face_recognition_models (offline)",
            requires=("dlib", "face_recognition_models"),
            weights=f"{_BASE}.landmarks:dlib_weights",
        ),
        "fan": ComponentSpec(
            f"{_BASE}.landmarks:FanLandmarker",
            summary="face-alignment 2D-FAN-4 + S3FD, as the ViCo challenge (weights from torch hub cache)",
            requires=("face_alignment",),
            weights=f"{_BASE}.landmarks:fan_weights",
        ),
    }


@hookimpl
def bench_add_coeff_extractors() -> dict[str, ComponentSpec]:
    return {
        "driver": ComponentSpec(
            f"{_BASE}.fd:DriverCoefficients",
            summary="the driver's own coefficients (FDs labelled source=driver)",
        ),
    }


@hookimpl
def bench_add_face_embedders() -> dict[str, ComponentSpec]:
    return {
        "dlib": ComponentSpec(
            f"{_BASE}.face_embed:DlibFaceEmbedder",
            summary="dlib 128-d ResNet face descriptor from face_recognition_models (offline)",
            requires=("dlib", "face_recognition_models"),
            weights=f"{_BASE}.face_embed:dlib_embedder_weights",
        ),
        "arcface": ComponentSpec(
            f"{_BASE}.face_embed:ArcFaceEmbedder",
            summary="ArcFace iresnet100 on the whole frame at 112x112, as the challenge",
            weights=f"{_BASE}.face_embed:arcface_weights",
        ),
    }
