"""3DMM coefficient layouts and conversions (SPEC section 2).

Driver order, 73 values per frame: angle 3 | exp 64 | trans 3 | crop 3.
PIRender order for the same values: exp 64 | angle 3 | trans 3 | crop 3.
Deep3DFaceRecon ``coeff`` (257): id 0:80 | exp 80:144 | tex 144:224 |
angle 224:227 | gamma 227:254 | trans 254:257; crop is ``transform_params[:, -3:]``.

Every conversion between orders happens here and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

N_COEFFS = 73

# Driver order
ANGLE = slice(0, 3)
EXP = slice(3, 67)
TRANS = slice(67, 70)
CROP = slice(70, 73)
POSE = slice(0, 3), slice(67, 70)  # angle and trans

# Deep3DFaceRecon 257-vector
RECON_ID = slice(0, 80)
RECON_EXP = slice(80, 144)
RECON_TEX = slice(144, 224)
RECON_ANGLE = slice(224, 227)
RECON_GAMMA = slice(227, 254)
RECON_TRANS = slice(254, 257)

# Index maps: pirender[..., i] = driver[..., _DRIVER_TO_PIRENDER[i]]
_DRIVER_TO_PIRENDER = [*range(3, 67), *range(0, 3), *range(67, 73)]
_PIRENDER_TO_DRIVER = [*range(64, 67), *range(0, 64), *range(67, 73)]


def to_pirender_order(coeffs: torch.Tensor) -> torch.Tensor:
    """(...,73) driver order -> (...,73) PIRender order."""
    _check(coeffs)
    return coeffs[..., _DRIVER_TO_PIRENDER]


def to_driver_order(coeffs: torch.Tensor) -> torch.Tensor:
    """(...,73) PIRender order -> (...,73) driver order."""
    _check(coeffs)
    return coeffs[..., _PIRENDER_TO_DRIVER]


def from_recon(coeff: np.ndarray, transform_params: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon ``coeff`` (T,257) + ``transform_params`` (T,5) -> (T,73) driver order."""
    import numpy as np

    if coeff.ndim != 2 or coeff.shape[1] != 257:
        raise ValueError(f"coeff must be (T,257), got {coeff.shape}")
    if transform_params.shape != (coeff.shape[0], 5):
        raise ValueError(
            f"transform_params must be ({coeff.shape[0]},5) to match coeff, got {transform_params.shape}"
        )
    return np.concatenate(
        [
            coeff[:, RECON_ANGLE],
            coeff[:, RECON_EXP],
            coeff[:, RECON_TRANS],
            transform_params[:, -3:],
        ],
        axis=1,
    ).astype(np.float32)


def _check(coeffs: torch.Tensor) -> None:
    if coeffs.shape[-1] != N_COEFFS:
        raise ValueError(f"expected (...,{N_COEFFS}) coefficients, got shape {tuple(coeffs.shape)}")
