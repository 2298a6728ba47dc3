"""FID between all generated and all ground-truth frames of a split (pytorch-fid).

Features: pytorch-fid's InceptionV3, pool3 (2048-d), on frames resized
bilinearly to 299x299 and scaled to [-1,1] (pytorch-fid's own preprocessing);
weights as described in :mod:`bench_plugins.metrics.inception`.

State: the feature moments of each side, float64 "sum" fields::

    gen_n, gt_n            ()            number of frames
    gen_sum, gt_sum        (2048,)       sum of features
    gen_outer, gt_outer    (2048*2049/2,) upper triangle (row-major, torch.triu_indices
                                          order) of the sum of outer products f f^T

so clips, shards and bootstrap resamples merge by addition, exactly up to float64
rounding. Packing the symmetric matrix halves the state: one clip state is
2 x 16.8 MB. From merged moments, ``mu = sum/n`` and ``sigma = (outer - n mu mu^T)/(n-1)``
(``np.cov``'s unbiased estimate, as pytorch-fid), and the value is
``pytorch_fid.fid_score.calculate_frechet_distance(mu_gen, sigma_gen, mu_gt, sigma_gt)``:

    FID = |mu_gen - mu_gt|^2 + tr(S_gen) + tr(S_gt) - 2 tr sqrtm(S_gen S_gt)

Bootstrap resamples use :func:`frechet_distance_fast` instead (see there): the
same quantity without a general matrix square root, ~10x cheaper.

Ground-truth features are cached per batch under
``$BENCH_HOME/cache/fid_gt/<network tag>/`` when the harness passes ``gt_key``
(the batch's content key: dataset hash, clip, frame range); the file name also
hashes the frames' bytes and shape, so a reused key can never return stale features.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import warnings
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from bench.accel import Accelerated, planned_mode, resolve_compile
from bench.errors import ConfigError, InputError, MissingDependencyError
from bench.metric import Metric
from bench.paths import cache_dir, file_sha256

from ._paired_frames import check_pair, empty_split
from .inception import FEATURE_DIM, Source, build_inception, fid_weights_path

Precision = Literal["fp32", "bf16"]
SIDES = ("gen", "gt")


@cache
def _triu(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = torch.triu_indices(dim, dim)
    return rows, cols


def pack_symmetric(matrix: torch.Tensor) -> torch.Tensor:
    """``(d,d)`` symmetric -> ``(d(d+1)/2,)`` upper triangle, row-major."""
    rows, cols = _triu(matrix.shape[0])
    return matrix[rows, cols]


def unpack_symmetric(packed: torch.Tensor, dim: int = FEATURE_DIM) -> torch.Tensor:
    """Inverse of :func:`pack_symmetric`."""
    rows, cols = _triu(dim)
    full = torch.zeros(dim, dim, dtype=packed.dtype, device=packed.device)
    full[rows, cols] = packed
    full[cols, rows] = packed
    return full


def feature_moments(features: torch.Tensor) -> dict[str, torch.Tensor]:
    """Moments of ``(n, d)`` features: ``n`` (), ``sum`` (d,), ``outer`` (packed), float64."""
    f64 = features.to(torch.float64)
    return {
        "n": torch.tensor(float(f64.shape[0]), dtype=torch.float64),
        "sum": f64.sum(dim=0),
        "outer": pack_symmetric(f64.T @ f64),
    }


def gaussian_from_moments(
    n: torch.Tensor, total: torch.Tensor, outer_packed: torch.Tensor, *, side: str = "features"
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` as float64 numpy, with ``np.cov``'s ``n-1`` normalisation.

    Raises:
        InputError: fewer than two frames (the covariance is undefined).
    """
    count = float(n)
    if count <= 0:
        raise empty_split("fid")
    if count < 2:
        raise InputError(
            None,
            f"fid: {side} has {count:.0f} frame; a covariance needs at least 2",
            fix="evaluate more frames (FID is meant for whole splits)",
        )
    dim = total.shape[0]
    mu = total.to(torch.float64) / count
    outer = unpack_symmetric(outer_packed.to(torch.float64), dim)
    sigma = (outer - count * torch.outer(mu, mu)) / (count - 1)
    return mu.numpy(), sigma.numpy()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """pytorch-fid's Fréchet distance (scipy ``sqrtm``), its console notes turned into warnings."""
    try:
        from pytorch_fid.fid_score import calculate_frechet_distance
    except ImportError as exc:
        raise MissingDependencyError("FID needs the pytorch-fid package", fix="pip install pytorch-fid") from exc
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        value = float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
    if captured.getvalue().strip():
        warnings.warn(f"pytorch-fid: {captured.getvalue().strip()}", RuntimeWarning, stacklevel=2)
    return value


def frechet_distance_fast(
    mu1: np.ndarray | torch.Tensor,
    sigma1: np.ndarray | torch.Tensor,
    mu2: np.ndarray | torch.Tensor,
    sigma2: np.ndarray | torch.Tensor,
    *,
    device: str | torch.device = "cpu",
) -> float:
    """The Fréchet distance through a symmetric eigenproblem instead of ``sqrtm``.

    ``tr sqrtm(S1 S2)`` is the sum of square roots of the eigenvalues of ``S1 S2``.
    With ``S1 = L L^T`` (Cholesky), ``S1 S2`` is similar to ``L^T S2 L``, which is
    symmetric positive semi-definite, so its eigenvalues come from ``eigvalsh``
    (no eigenvectors, no Schur form): about ``3.7 d^3`` flops against ``~25 d^3``
    for scipy's complex Schur ``sqrtm``. Agrees with pytorch-fid to ~1e-9
    relative on full-rank covariances. When ``S1`` is singular (fewer frames than
    2048) a jitter of ``1e-10 * mean(diag S1)`` is added before the Cholesky
    factorisation (escalated if needed), which shifts the trace term by at most
    ~``d * sqrt(jitter * max eig S2)``: ~1e-4 relative on typical FIDs; pytorch-fid's
    own ``sqrtm`` of a singular product is not more exact than that.
    """
    dt = torch.float64
    s1 = torch.as_tensor(sigma1, dtype=dt).to(device)
    s2 = torch.as_tensor(sigma2, dtype=dt).to(device)
    diff = torch.as_tensor(mu1, dtype=dt).to(device) - torch.as_tensor(mu2, dtype=dt).to(device)
    scale = float(torch.diagonal(s1).mean().abs()) or 1.0
    eye = torch.eye(s1.shape[0], dtype=dt, device=s1.device)
    chol = None
    for jitter in (0.0, 1e-10, 1e-8, 1e-6):
        factor, info = torch.linalg.cholesky_ex(s1 + (jitter * scale) * eye if jitter else s1)
        if int(info) == 0:
            chol = factor
            break
    if chol is None:  # not even PSD with jitter: fall back to the definition
        return frechet_distance(*(np.asarray(torch.as_tensor(a).cpu()) for a in (mu1, sigma1, mu2, sigma2)))
    middle = chol.T @ s2 @ chol
    middle = (middle + middle.T) / 2  # symmetric up to rounding; eigvalsh reads one triangle
    eigenvalues = torch.linalg.eigvalsh(middle).clamp(min=0.0)
    tr_covmean = eigenvalues.sqrt().sum()
    value = diff.dot(diff) + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return float(value)


class FID(Metric):
    """Fréchet Inception Distance, all generated vs all ground-truth frames of a split.

    Args:
        device: where InceptionV3 runs: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        precision: ``"fp32"`` (pytorch-fid's numbers) or ``"bf16"`` (CPU/GPU autocast:
            ~3x faster on AMX CPUs, features off by ~2%; not comparable with fp32 FIDs).
        batch_size: frames per InceptionV3 forward pass.
        compile: fp32 on CPU only: ``"auto"`` (AOTInductor-compiled network when a C++
            compiler is present, ~1.8x faster, features within 1e-5 of eager; compiled
            once per machine), ``"on"`` or ``"off"`` (see :mod:`bench.accel`).
        weights_source: ``"auto"``, ``"download"`` or ``"convert"`` (see
            :func:`~bench_plugins.metrics.inception.ensure_fid_weights`).
        cache_gt: cache ground-truth features by ``gt_key`` + content hash.

    ``update(frames, gt_frames, gt_key=None)`` takes aligned ``(b,3,H,W)`` batches
    in [0,1] (the two sides may differ in size: both are resized to 299).
    """

    name: ClassVar[str] = "fid"
    higher_is_better: ClassVar[bool] = False
    inputs: ClassVar[frozenset[str]] = frozenset({"frames", "gt_frames"})
    frame_level: ClassVar[bool] = True
    version: ClassVar[str] = "1"
    #: FID of one clip (a few hundred frames vs 2048 dims) means little and costs a sqrtm.
    per_clip_values: ClassVar[bool] = False
    #: Default bootstrap resamples (each costs an eigenproblem of size 2048).
    bootstrap_resamples: ClassVar[int] = 100

    def __init__(
        self,
        device: str = "auto",
        precision: Precision = "fp32",
        batch_size: int = 32,
        weights_source: Source = "auto",
        cache_gt: bool = True,
        compile: str = "auto",
    ) -> None:
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"fid: precision must be 'fp32' or 'bf16', got {precision!r}")
        if weights_source not in ("auto", "download", "convert"):
            raise ConfigError(
                f"fid: weights_source must be 'auto', 'download' or 'convert', got {weights_source!r}"
            )
        if batch_size < 1:
            raise ConfigError(f"fid: batch_size must be >= 1, got {batch_size}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.precision: Precision = precision
        self.batch_size = int(batch_size)
        self.weights_source: Source = weights_source
        self.cache_gt = bool(cache_gt)
        resolve_compile(compile)  # a bad value fails at planning, not mid-run
        self.compile = compile
        self._model: torch.nn.Module | None = None
        self._net: Accelerated | None = None
        self._tag: str | None = None
        self._features: dict[str, list[torch.Tensor]] = {side: [] for side in SIDES}
        for side in SIDES:
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.float64), "sum")
            self.add_state(f"{side}_sum", torch.zeros(FEATURE_DIM, dtype=torch.float64), "sum")
            self.add_state(
                f"{side}_outer",
                torch.zeros(FEATURE_DIM * (FEATURE_DIM + 1) // 2, dtype=torch.float64),
                "sum",
            )

    @property
    def backend(self) -> str:
        import pytorch_fid

        return (
            f"pytorch-fid {pytorch_fid.__version__} InceptionV3 pool3 "
            f"({self.device.type}, {self.precision}, {self._mode()})"
        )

    # features ---------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = build_inception(self.device, self.weights_source)
        return self._model

    def _compile_option(self) -> str:
        return self.compile if self.precision == "fp32" else "off"  # autocast cannot be compiled in

    def _mode(self) -> str:
        return planned_mode(self._compile_option(), self.device)

    @property
    def net(self) -> Accelerated:
        """The network as run: channels-last, and on CPU in fp32 compiled (:mod:`bench.accel`)."""
        if self._net is None:
            self._net = Accelerated("fid-inception-v3", self.model, compile=self._compile_option())
        return self._net

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """InceptionV3 pool3 features of ``(b,3,H,W)`` frames in [0,1] -> ``(b,2048)`` float32 CPU."""
        net = self.net
        out = []
        with torch.inference_mode():
            for start in range(0, frames.shape[0], self.batch_size):
                chunk = frames[start : start + self.batch_size].to(self.device, torch.float32)
                if self.precision == "bf16":
                    with torch.autocast(self.device.type, dtype=torch.bfloat16):
                        pooled = net(chunk)[0]
                else:
                    pooled = net(chunk)[0]
                out.append(pooled.reshape(chunk.shape[0], -1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM)

    def cache_tag(self) -> str:
        """Identity of the feature extractor: metric version, torch, weights bytes, device, precision."""
        if self._tag is None:
            self.model  # noqa: B018 - makes sure the weights file exists before hashing it
            weights = file_sha256(fid_weights_path())[:16]
            self._tag = (
                f"v{self.version}-torch{torch.__version__}-w{weights}-{self.device.type}-{self.precision}"
                f"-{self._mode()}"
            )
        return self._tag

    def _gt_cache_file(self, gt_frames: torch.Tensor, gt_key: str) -> Path:
        content = hashlib.blake2b(digest_size=16)
        content.update(gt_key.encode())
        content.update(repr((tuple(gt_frames.shape), str(gt_frames.dtype))).encode())
        content.update(gt_frames.detach().cpu().contiguous().numpy().tobytes())
        return cache_dir("fid_gt", self.cache_tag()) / f"{content.hexdigest()}.npy"

    def gt_features(self, gt_frames: torch.Tensor, gt_key: str | None = None) -> torch.Tensor:
        """Ground-truth features, from the cache when ``gt_key`` is given and seen before."""
        if gt_key is None or not self.cache_gt:
            return self.features(gt_frames)
        path = self._gt_cache_file(gt_frames, gt_key)
        if path.is_file():
            try:
                cached = torch.from_numpy(np.load(path))
            except (OSError, ValueError):
                cached = None  # truncated/corrupt file: recompute and overwrite
            if cached is not None and tuple(cached.shape) == (gt_frames.shape[0], FEATURE_DIM):
                return cached
        feats = self.features(gt_frames)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".npy.part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, feats.numpy())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return feats

    # metric -----------------------------------------------------------------
    def update(  # type: ignore[override]
        self, frames: torch.Tensor, gt_frames: torch.Tensor, gt_key: str | None = None
    ) -> None:
        """Add aligned batches: ``(b,3,H,W)`` generated and ``(b,3,H',W')`` ground truth, in [0,1]."""
        frames, gt_frames = check_pair(self.name, frames, gt_frames, same_size=False)
        if frames.shape[0] == 0:
            return
        self.add_features("gen", self.features(frames))
        self.add_features("gt", self.gt_features(gt_frames, gt_key))

    def add_features(self, side: str, features: torch.Tensor) -> None:
        """Accumulate ``(b,2048)`` features into one side's moments (``"gen"`` or ``"gt"``)."""
        moments = feature_moments(features)
        for field, value in moments.items():
            key = f"{side}_{field}"
            self._state[key] = self._state[key] + value
        self._features[side].append(features.detach().to("cpu", torch.float32))

    def reset(self) -> None:
        super().reset()
        self._features = {side: [] for side in SIDES}

    def stored_state(self) -> dict[str, torch.Tensor]:
        """A clip's state as stored: its float32 features when they are smaller than the
        packed moments (fewer than ~2050 frames a side: 8 KB a frame vs 16.8 MB), which
        :meth:`restore_state` turns back into moments. 10-100x smaller result stores."""
        state = self.state()
        stored: dict[str, torch.Tensor] = {}
        for side in SIDES:
            feats = self._features[side]
            n = sum(f.shape[0] for f in feats)
            if n != int(state[f"{side}_n"]) or n * FEATURE_DIM * 4 >= state[f"{side}_outer"].numel() * 8:
                return state  # moments were set another way, or the features are the bigger form
            stored[f"{side}_n"] = state[f"{side}_n"]
            stored[f"{side}_sum"] = state[f"{side}_sum"]
            stored[f"{side}_features"] = torch.cat(feats) if feats else torch.zeros(0, FEATURE_DIM)
        return stored

    def restore_state(self, stored: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Moments from a :meth:`stored_state` (a state of moments passes through)."""
        restored = dict(stored)
        for side in SIDES:
            feats = restored.pop(f"{side}_features", None)
            if feats is not None:
                # the sum of outer products over all of the clip's frames at once: float64
                # products of float32 features are exact, their sum is rounded as a
                # batch-by-batch accumulation would be, to ~1e-16 relative
                f64 = feats.to(torch.float64)
                restored[f"{side}_outer"] = pack_symmetric(f64.T @ f64)
        return restored

    def gaussians(self, state: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, ...]:
        """``(mu_gen, sigma_gen, mu_gt, sigma_gt)`` of a (merged) state."""
        mu_g, s_g = gaussian_from_moments(
            state["gen_n"], state["gen_sum"], state["gen_outer"], side="generated side"
        )
        mu_t, s_t = gaussian_from_moments(
            state["gt_n"], state["gt_sum"], state["gt_outer"], side="ground-truth side"
        )
        return mu_g, s_g, mu_t, s_t

    def _compute(self, state: Mapping[str, torch.Tensor]) -> float:
        gaussians = self.gaussians(state)
        try:
            return frechet_distance(*gaussians)
        except ValueError as exc:  # pytorch-fid: "Imaginary component ..." on ill-conditioned input
            warnings.warn(
                f"fid: pytorch-fid's sqrtm failed ({exc}); using the eigenvalue formulation",
                RuntimeWarning,
                stacklevel=2,
            )
            return frechet_distance_fast(*gaussians)

    def bootstrap_compute_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The value of a bootstrap resample, via :func:`frechet_distance_fast`."""
        device = self.device if self.device.type == "cuda" else torch.device("cpu")
        return {self.name: frechet_distance_fast(*self.gaussians(state), device=device)}
