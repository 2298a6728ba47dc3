"""`rig`: a weight-free renderer that warps the reference image with a coefficient-driven flow.

The rig turns the *difference* between each frame's coefficients and the source
coefficients into one dense backward flow and samples the reference with
``torch.nn.functional.grid_sample`` (bilinear, ``align_corners=False``, like
PIRender's warp). It needs no weights, runs at hundreds of frames per second on a
CPU, and is what the ``vico-mini`` generator uses to make its ground truth.

Geometry (all in pixels of the (H,W) frame; conventions follow Deep3DFaceRecon):

* crop ``[s, tx, ty]``: the face centre is at ``(tx, H-1-ty)`` (``ty`` counts
  from the bottom, as in Deep3DFaceRecon's ``transform_params``) and the face
  radius is ``FACE_RADIUS_PX / s`` for a 256-pixel frame (scaled with the frame).
  A crop change scales and shifts the head.
* trans ``[x, y, z]``: a camera at distance ``CAMERA_DISTANCE`` with focal length
  ``FOCAL_PX``; x/y shift the head (y points up), z brings it closer (larger).
* angle ``[pitch, yaw, roll]`` in radians: roll rotates the head about its centre;
  yaw and pitch move the face over a rounded depth profile and foreshorten it.
* exp (64): a fixed, seeded basis of smooth displacement fields in face
  coordinates (the face centre at 0, radius 1, y down). The leading components
  are designed: 0 jaw/mouth opening, 1 smile, 2 brow raise, 3 blink (eyes
  close), 4 frown, 5 pucker; the rest are random smooth bumps inside the face.

The head region (up to ``HEAD_INNER`` face radii) moves rigidly with the head; the
flow fades out to zero at ``HEAD_OUTER`` radii, so the plain output also drags
the background near the head: the distortion a fusion post-processor repairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from bench import coeffs as C

#: face radius in pixels of a 256-pixel frame when the crop scale ``s`` is 1
FACE_RADIUS_PX = 64.0
#: Deep3DFaceRecon's camera: focal length (pixels of its 224 crop) and distance
FOCAL_PX = 1015.0
CAMERA_DISTANCE = 10.0
#: head region, in face radii: moves with the head inside, static outside
HEAD_INNER = 1.6
HEAD_OUTER = 2.6
#: the expression basis is tabulated on a (BASIS_GRID, BASIS_GRID) grid over
#: face coordinates [-BASIS_EXTENT, BASIS_EXTENT]^2 and sampled bilinearly
BASIS_GRID = 64
BASIS_EXTENT = 2.0
BASIS_SEED = 20240601
N_EXP = 64
#: the flow is computed on a grid this many times coarser, then upsampled
FLOW_STRIDE = 4

#: face landmarks in face coordinates (x right, y down, radius 1)
EYE_Y, EYE_X = -0.26, 0.34
BROW_Y = -0.45
MOUTH_Y = 0.36


def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def expression_basis(grid: int = BASIS_GRID, seed: int = BASIS_SEED) -> np.ndarray:
    """The 64 displacement fields, ``(64, 2, grid, grid)`` float32 in face radii per unit.

    Channel 0 is x (right), 1 is y (down); the fields are *forward* displacements
    of face points (a positive jaw coefficient moves the chin down).
    """
    axis = np.linspace(-BASIS_EXTENT, BASIS_EXTENT, grid)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    basis = np.zeros((N_EXP, 2, grid, grid), dtype=np.float64)
    # 0: jaw / mouth opening: everything below the mouth line moves down, fading at the chin.
    jaw = _smoothstep(MOUTH_Y - 0.06, MOUTH_Y + 0.10, y) * (1 - _smoothstep(0.95, 1.35, y))
    basis[0, 1] = 0.10 * jaw * np.exp(-0.5 * (x / 0.42) ** 2)
    for side in (-1.0, 1.0):
        # 1: smile: mouth corners move out and up
        g = _gauss(x, y, side * 0.26, MOUTH_Y, 0.13, 0.10)
        basis[1, 0] += side * 0.05 * g
        basis[1, 1] += -0.04 * g
        # 2: brow raise
        g = _gauss(x, y, side * EYE_X, BROW_Y, 0.20, 0.09)
        basis[2, 1] += -0.05 * g
        # 3: blink: the eye region contracts onto the eye line
        g = _gauss(x, y, side * EYE_X, EYE_Y, 0.14, 0.08)
        basis[3, 1] += -(y - EYE_Y) * 0.45 * g
        # 4: frown: brows move down and together
        g = _gauss(x, y, side * 0.24, BROW_Y + 0.03, 0.14, 0.09)
        basis[4, 0] += -side * 0.03 * g
        basis[4, 1] += 0.035 * g
        # 5: pucker: mouth corners move in
        g = _gauss(x, y, side * 0.24, MOUTH_Y, 0.12, 0.09)
        basis[5, 0] += -side * 0.035 * g
    # 6..63: seeded smooth bumps inside the face, weaker for later components
    rng = np.random.default_rng(seed)
    for k in range(6, N_EXP):
        amplitude = 0.03 / (1.0 + (k - 6) / 12.0)
        for _ in range(3):
            radius, phi = 0.75 * math.sqrt(rng.random()), 2 * math.pi * rng.random()
            cx, cy = radius * math.cos(phi), radius * math.sin(phi)
            sigma = 0.12 + 0.2 * rng.random()
            direction = rng.normal(size=2)
            direction /= np.linalg.norm(direction) + 1e-12
            g = _gauss(x, y, cx, cy, sigma, sigma)
            basis[k, 0] += amplitude * direction[0] * g
            basis[k, 1] += amplitude * direction[1] * g
    return basis.astype(np.float32)


class RigRenderer:
    """Warp the reference with a flow made from coefficient differences.

    Args:
        batch_size: frames per yielded batch.
        padding_mode: ``grid_sample`` padding outside the reference: ``zeros``
            (PIRender's default, black borders) or ``border``/``reflection``.
        device: torch device for the warp.
    """

    render_options = frozenset({"padding_mode"})

    def __init__(self, batch_size: int = 32, padding_mode: str = "zeros", device: str = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"padding_mode must be zeros, border or reflection, got {padding_mode!r}")
        self.batch_size = batch_size
        self.padding_mode = padding_mode
        self.device = torch.device(device)
        self.model = None  # nothing trainable
        self._basis = torch.from_numpy(expression_basis()).to(self.device)  # (64,2,G,G)
        self._grids: dict[tuple[int, int], torch.Tensor] = {}

    # ------------------------------------------------------------------ geometry
    def _base_grid(self, height: int, width: int) -> torch.Tensor:
        """(H,W,2) pixel-centre coordinates in grid_sample's [-1,1] (align_corners=False)."""
        key = (height, width)
        if key not in self._grids:
            ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
            xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            self._grids[key] = torch.stack([gx, gy], dim=-1).to(self.device)
        return self._grids[key]

    def flow(self, coeffs: torch.Tensor, source_coeffs: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Backward sampling grid for every frame.

        The flow is smooth, so its displacement is computed on a grid ``FLOW_STRIDE``
        times coarser and upsampled bilinearly (the identity stays exact: zero
        displacement upsamples to zero).

        Args:
            coeffs: (T,73) driver-order coefficients of the frames.
            source_coeffs: (73,) coefficients of the reference image.
            height, width: frame size.

        Returns:
            (T,H,W,2) grid for ``grid_sample`` (x, y in [-1,1], align_corners=False).
        """
        coeffs = coeffs.to(self.device, torch.float32)
        src = source_coeffs.to(self.device, torch.float32)
        n = coeffs.shape[0]
        px = width / 256.0  # the crop and camera constants are for a 256-pixel frame
        to_nx, to_ny = 2.0 / width, 2.0 / height  # pixels -> normalised units

        s0, tx0, ty0 = src[C.CROP].unbind()
        s1, tx1, ty1 = coeffs[:, C.CROP].unbind(-1)
        z0, z1 = src[C.TRANS][2], coeffs[:, C.TRANS][:, 2]
        # source face centre and radius (normalised units)
        c0x = (2 * tx0 + 1) / width - 1
        c0y = (2 * (height - 1 - ty0) + 1) / height - 1
        radius_px = FACE_RADIUS_PX * px / s0
        r0x, r0y = radius_px * to_nx, radius_px * to_ny
        # head motion: crop shift plus projected 3D translation; zoom from crop scale and depth
        d_trans = coeffs[:, C.TRANS][:, :2] - src[C.TRANS][:2]
        gain = FOCAL_PX / (CAMERA_DISTANCE - z1) * px / s0 * (256.0 / 224.0)
        shift_x = ((tx1 - tx0) + gain * d_trans[:, 0]) * to_nx
        shift_y = (-(ty1 - ty0) - gain * d_trans[:, 1]) * to_ny
        zoom = (s0 / s1) * (CAMERA_DISTANCE - z0) / (CAMERA_DISTANCE - z1)
        d_angle = coeffs[:, C.ANGLE] - src[C.ANGLE]
        pitch, yaw, roll = d_angle.unbind(-1)
        d_exp = coeffs[:, C.EXP] - src[C.EXP]  # (T,64)

        coarse_h = max(1, -(-height // FLOW_STRIDE))
        coarse_w = max(1, -(-width // FLOW_STRIDE))
        base = self._base_grid(coarse_h, coarse_w)  # (h,w,2) pixel centres of the coarse grid
        bx, by = base[..., 0], base[..., 1]

        def per_frame(v: torch.Tensor) -> torch.Tensor:
            return v.view(n, 1, 1)

        # output pixel -> head-local face coordinates (undo shift, zoom, roll); work in
        # pixel-isotropic units so rotation is a true rotation on non-square frames
        lx = (bx - (c0x + per_frame(shift_x))) / r0x
        ly = (by - (c0y + per_frame(shift_y))) / r0y
        cos_r, sin_r = per_frame(torch.cos(roll)), per_frame(torch.sin(roll))
        zoom_f = per_frame(zoom)
        ux = (cos_r * lx + sin_r * ly) / zoom_f
        uy = (-sin_r * lx + cos_r * ly) / zoom_f
        dist2 = ux * ux + uy * uy
        # yaw/pitch: points on a rounded face surface (depth `depth`) rotate; the
        # backward map shifts by -sin(angle)*depth and stretches by 1/cos (foreshortening)
        depth = torch.exp(-0.5 * dist2 / 0.55**2)
        vx = (ux - per_frame(torch.sin(yaw)) * depth * 0.6) / per_frame(torch.cos(yaw).clamp_min(0.5))
        vy = (uy - per_frame(torch.sin(pitch)) * depth * 0.6) / per_frame(torch.cos(pitch).clamp_min(0.5))
        # expression: combine the basis per frame, sample it at the face coordinates
        fields = torch.einsum("tk,kcij->tcij", d_exp, self._basis)  # (T,2,G,G)
        where = torch.stack([vx, vy], dim=-1) / BASIS_EXTENT
        disp = F.grid_sample(fields, where, mode="bilinear", padding_mode="zeros", align_corners=True)
        sx_face = vx - disp[:, 0]
        sy_face = vy - disp[:, 1]
        qx = c0x + sx_face * r0x
        qy = c0y + sy_face * r0y
        # fade the head motion out into the background
        dist = torch.sqrt(dist2)
        t = ((dist - HEAD_INNER) / (HEAD_OUTER - HEAD_INNER)).clamp(0, 1)
        weight = 1 - t * t * (3 - 2 * t)
        disp_full = torch.stack([weight * (qx - bx), weight * (qy - by)], dim=1)  # (T,2,h,w)
        if (coarse_h, coarse_w) != (height, width):
            disp_full = F.interpolate(disp_full, size=(height, width), mode="bilinear", align_corners=False)
        return self._base_grid(height, width) + disp_full.permute(0, 2, 3, 1)

    def warp(self, image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Sample ``image`` (C,H,W) or (T,C,H,W) at ``grid`` (T,H,W,2) -> (T,C,H,W)."""
        if image.dim() == 3:
            image = image.unsqueeze(0).expand(grid.shape[0], -1, -1, -1)
        return F.grid_sample(
            image.to(self.device, torch.float32), grid, mode="bilinear",
            padding_mode=self.padding_mode, align_corners=False,
        )

    # ------------------------------------------------------------------ contract
    def render(
        self,
        source: torch.Tensor,
        coeffs: torch.Tensor,
        *,
        source_coeffs: torch.Tensor | None = None,
    ) -> Iterator[torch.Tensor]:
        """Stream frames: ``source`` (3,H,W) in [0,1], ``coeffs`` (T,73) driver order.

        ``source_coeffs`` (73,) describes the reference; default ``coeffs[0]``.
        Yields (b,3,H,W) float32 in [0,1], b <= batch_size.
        """
        if source.dim() != 3 or source.shape[0] != 3:
            raise ValueError(f"source must be (3,H,W), got {tuple(source.shape)}")
        if coeffs.dim() != 2 or coeffs.shape[1] != C.N_COEFFS:
            raise ValueError(f"coeffs must be (T,{C.N_COEFFS}), got {tuple(coeffs.shape)}")
        if source_coeffs is None:
            source_coeffs = coeffs[0]
        height, width = source.shape[1:]
        image = source.to(self.device, torch.float32).unsqueeze(0)
        with torch.inference_mode():
            for start in range(0, coeffs.shape[0], self.batch_size):
                chunk = coeffs[start : start + self.batch_size]
                grid = self.flow(chunk, source_coeffs, height, width)
                frames = F.grid_sample(
                    image.expand(chunk.shape[0], -1, -1, -1), grid, mode="bilinear",
                    padding_mode=self.padding_mode, align_corners=False,
                )
                yield frames.clamp_(0, 1)
