"""The PIRender generator (mapping, warping and editing networks), built for inference.

Parameters and state-dict keys are exactly those of the official ``net_G_ema``
(``mapping_net.*``, ``warpping_net.*``, ``editing_net.*``; 304 tensors, 22,519,109
parameters with the ``face.yaml`` configuration), so the official checkpoint loads with
``strict=True``. The forward pass computes the official function; it differs only in
*how*, through exact algebraic rewrites:

* the editing net's residual blocks compute ``act(norm1(conv1(x)))`` and then overwrite
  it (``dx = norm2(conv2(x))``): the discarded branch (~22 of ~123 GFLOPs per 256x256
  frame) is not computed;
* the decoder's ``conv3x3(nearest_upsample_2x(x))`` equals four 2x2 convolutions on the
  low-resolution ``x`` (one per output phase, kernels summed from the 3x3 taps): 4/9 of
  the multiply-adds;
* what depends on the source image only (the warping net's input convolution and its
  instance statistics, the source half of the editing net's first convolution) is
  computed once per clip by :meth:`PIRenderGenerator.prepare_source`;
* instance/layer normalisation, AdaIN modulation and the leaky ReLU are folded into one
  per-channel scale and shift;
* the mapping net is a 1-D convolution stack, so descriptors of consecutive frames come
  from one pass over the (edge-padded) coefficient sequence instead of one 27-frame
  window per frame (:meth:`PIRenderGenerator.describe_sequence`).

Tensors are ``(B,C,H,W)``; activations may be channels-last and, under autocast, bf16/fp16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

#: semantic window radius of the official dataset: a frame sees 2*13+1 coefficient frames
SEMANTIC_RADIUS = 13
_SLOPE = 0.1  # every nonlinearity in PIRender is LeakyReLU(0.1)
_EPS = 1e-5  # InstanceNorm2d / layer_norm defaults


def _moments(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and reciprocal standard deviation of ``x`` over ``dims`` (kept), in float32.

    ``dims`` is ``(2,3)`` (instance norm) or ``(1,2,3)`` (layer norm over a sample).
    ``torch.var_mean`` (Welford) is several times slower than two plain reductions on
    CPU, so the variance is ``E[d^2] - E[d]^2`` with ``d = x - x[first pixel]`` for the
    instance statistics (the shift keeps a far-from-zero mean from cancelling), and
    ``E[x^2] - E[x]^2`` over a whole sample for the layer norm.
    """
    if x.dtype != torch.float32:
        # bf16/fp16 means and mean squares would cancel catastrophically in E[x^2]-E[x]^2
        x = x.float()
    if dims == (1, 2, 3):
        # a whole sample is contiguous in both layouts; reduce it as one flat row
        flat = (x.permute(0, 2, 3, 1) if _is_channels_last(x) else x).reshape(x.shape[0], -1)
        mean = flat.mean(1)
        sq = torch.linalg.vector_norm(flat, 2, dim=1).square() / flat.shape[1]
        mean, sq = mean.view(-1, 1, 1, 1), sq.view(-1, 1, 1, 1)
    else:
        # shifted by one sample per channel, so a mean far from zero does not cancel
        shift = x[:, :, :1, :1]
        d = x - shift
        mean = d.mean(dims, keepdim=True)
        sq = d.mul_(d).mean(dims, keepdim=True)
        var = (sq - mean * mean).clamp_(min=0)
        return mean.add_(shift), torch.rsqrt(var + _EPS)
    var = (sq - mean * mean).clamp_(min=0)
    return mean, torch.rsqrt(var + _EPS)


def _affine(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, act: bool, inplace: bool = False
) -> torch.Tensor:
    """``x * scale + shift`` (per sample and channel), then LeakyReLU(0.1) if ``act``.

    ``inplace`` overwrites ``x`` (a fresh conv output nobody else reads): on CPU, writing
    into a new 100 MB buffer costs more in page faults than the arithmetic itself.
    """
    scale, shift = scale.to(x.dtype), shift.to(x.dtype)
    if inplace and scale.shape[0] == x.shape[0]:
        out = torch.addcmul(shift, x, scale, out=x)
    else:
        out = torch.addcmul(shift, x, scale)
    return F.leaky_relu_(out, _SLOPE) if act else out


class LayerNorm2d(nn.Module):
    """Official ``LayerNorm2d``: normalise over (C,H,W), per-channel affine."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x: torch.Tensor, act: bool = False, inplace: bool = False) -> torch.Tensor:
        mean, rstd = _moments(x, (1, 2, 3))
        scale = rstd * self.weight[None]  # (B,C,1,1)
        return _affine(x, scale, self.bias[None] - mean * scale, act, inplace)


class ADAIN(nn.Module):
    """Instance norm modulated by the descriptor: ``IN(x) * (1 + gamma(z)) + beta(z)``."""

    def __init__(self, channels: int, feature: int) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Linear(feature, 128), nn.ReLU())
        self.mlp_gamma = nn.Linear(128, channels)
        self.mlp_beta = nn.Linear(128, channels)

    def modulation(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,F) descriptor -> ``1 + gamma`` and ``beta``, each (B,C,1,1) float32.

        Always float32 (outside any autocast): a few thousand multiply-adds per frame that
        scale every activation, so reduced precision here would cost accuracy for nothing.
        """
        with torch.autocast(z.device.type, enabled=False):
            hidden = self.mlp_shared(z.float())
            gain = 1 + self.mlp_gamma(hidden)
            return gain[:, :, None, None], self.mlp_beta(hidden)[:, :, None, None]

    def forward(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        act: bool = False,
        stats: tuple[torch.Tensor, torch.Tensor] | None = None,
        inplace: bool = False,
    ) -> torch.Tensor:
        """``stats`` are precomputed instance moments of ``x`` (shared by two ADAINs)."""
        mean, rstd = _moments(x, (2, 3)) if stats is None else stats
        gain, beta = self.modulation(z)
        scale = rstd * gain
        return _affine(x, scale, beta - mean * scale, act, inplace)


class MappingNet(nn.Module):
    """Coefficient windows (B,73,27) -> descriptor (B,256,1) (official interface)."""

    def __init__(self, coeff_nc: int = 73, descriptor_nc: int = 256, layer: int = 3) -> None:
        super().__init__()
        self.layer = layer
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, descriptor_nc, kernel_size=7))
        for i in range(layer):
            block = nn.Sequential(
                nn.LeakyReLU(_SLOPE),
                nn.Conv1d(descriptor_nc, descriptor_nc, kernel_size=3, dilation=3),
            )
            setattr(self, f"encoder{i}", block)

    def features(self, seq: torch.Tensor) -> torch.Tensor:
        """(B,73,L) -> (B,256,L-24): the conv stack before pooling (fully convolutional)."""
        out = self.first(seq)
        for i in range(self.layer):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        return out

    def forward(self, semantics: torch.Tensor) -> torch.Tensor:
        return self.features(semantics).mean(dim=2, keepdim=True)


class EncoderBlock(nn.Module):
    """ADAIN -> act -> 4x4/2 conv -> ADAIN -> act -> 3x3 conv."""

    def __init__(self, cin: int, cout: int, feature: int) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1)
        self.conv_1 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1)
        self.norm_0 = ADAIN(cin, feature)
        self.norm_1 = ADAIN(cout, feature)

    def forward(
        self, x: torch.Tensor, z: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = self.conv_0(self.norm_0(x, z, act=True, stats=stats))  # x is also a skip: copy
        return self.conv_1(self.norm_1(x, z, act=True, inplace=True))


class DecoderBlock(nn.Module):
    """Residual up-block: ``convT_s(act(ADAIN_s x)) + convT_1(act(ADAIN_1 conv_0(act(ADAIN_0 x))))``."""

    def __init__(self, cin: int, cout: int, hidden: int, feature: int) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(cin, hidden, kernel_size=3, stride=1, padding=1)
        self.conv_1 = nn.ConvTranspose2d(hidden, cout, 3, stride=2, padding=1, output_padding=1)
        self.conv_s = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
        self.norm_0 = ADAIN(cin, feature)
        self.norm_1 = ADAIN(hidden, feature)
        self.norm_s = ADAIN(cin, feature)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        stats = _moments(x, (2, 3))  # norm_0 and norm_s normalise the same x
        shortcut = self.conv_s(self.norm_s(x, z, act=True, stats=stats))
        dx = self.conv_0(self.norm_0(x, z, act=True, stats=stats))
        dx = self.conv_1(self.norm_1(dx, z, act=True, inplace=True))
        return shortcut.add_(dx)


class ADAINEncoder(nn.Module):
    def __init__(self, image_nc: int, feature: int, ngf: int, max_nc: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        self.input_layer = nn.Conv2d(image_nc, ngf, kernel_size=7, stride=1, padding=3)
        for i in range(layers):
            cin, cout = min(ngf * 2**i, max_nc), min(ngf * 2 ** (i + 1), max_nc)
            setattr(self, f"encoder{i}", EncoderBlock(cin, cout, feature))


class ADAINDecoder(nn.Module):
    def __init__(self, feature: int, ngf: int, max_nc: int, enc_layers: int, dec_layers: int) -> None:
        super().__init__()
        self.levels = list(reversed(range(enc_layers - dec_layers, enc_layers)))
        cout = ngf
        for i in self.levels:
            cin = min(ngf * 2 ** (i + 1), max_nc) * (1 if i == enc_layers - 1 else 2)
            cout = min(ngf * 2**i, max_nc)
            setattr(self, f"decoder{i}", DecoderBlock(cin, cout, cout, feature))
        self.output_nc = 2 * cout


class Hourglass(nn.Module):
    def __init__(self, image_nc: int, feature: int, ngf: int, max_nc: int, enc: int, dec: int) -> None:
        super().__init__()
        self.encoder = ADAINEncoder(image_nc, feature, ngf, max_nc, enc)
        self.decoder = ADAINDecoder(feature, ngf, max_nc, enc, dec)
        self.output_nc = self.decoder.output_nc

    def forward(self, source: SourceFeatures, z: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        first = cast(EncoderBlock, enc.encoder0)
        out = first(source.warp_input, z, stats=source.warp_input_stats)
        skips = [source.warp_input, out]
        for i in range(1, enc.layers):
            out = getattr(enc, f"encoder{i}")(out, z)
            skips.append(out)
        out = skips.pop()
        for i in self.decoder.levels:
            out = getattr(self.decoder, f"decoder{i}")(out, z)
            out = torch.cat([out, skips.pop()], 1)
        return out


class WarpingNet(nn.Module):
    """Source + descriptor -> flow field (at 1/4 resolution) and the warped source."""

    def __init__(
        self,
        image_nc: int = 3,
        descriptor_nc: int = 256,
        base_nc: int = 32,
        max_nc: int = 256,
        encoder_layer: int = 5,
        decoder_layer: int = 3,
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass(image_nc, descriptor_nc, base_nc, max_nc, encoder_layer, decoder_layer)
        nc = self.hourglass.output_nc
        self.flow_out = nn.Sequential(
            LayerNorm2d(nc), nn.LeakyReLU(_SLOPE), nn.Conv2d(nc, 2, kernel_size=7, stride=1, padding=3)
        )

    def flow(self, source: SourceFeatures, z: torch.Tensor) -> torch.Tensor:
        """(B,2,h,w) flow in pixels of the flow grid."""
        hidden = self.hourglass(source, z)
        norm = cast(LayerNorm2d, self.flow_out[0])
        conv = cast(nn.Conv2d, self.flow_out[2])
        return conv(norm(hidden, act=True, inplace=True))


def warp(image: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Official warp: flow (B,2,h,w) -> sampling grid at image size -> bilinear grid_sample.

    ``image`` is (1 or B,3,H,W); the grid is ``identity + 2 * flow / (size - 1)``
    (align_corners=False sampling, as the official code), bilinearly resized to (H,W).
    """
    b, _, h, w = flow.shape
    flow = flow.float()
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype) * (2 / (w - 1)) - 1
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype) * (2 / (h - 1)) - 1
    deformation = torch.empty((b, 2, h, w), device=flow.device, dtype=flow.dtype)
    deformation[:, 0] = flow[:, 0] * (2 / (w - 1)) + xs
    deformation[:, 1] = flow[:, 1] * (2 / (h - 1)) + ys[:, None]
    size = image.shape[2:]
    if (h, w) != tuple(size):
        deformation = F.interpolate(deformation, size=size, mode="bilinear", align_corners=False)
    grid = deformation.permute(0, 2, 3, 1)
    image = image.float().expand(b, -1, -1, -1).contiguous()
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


class ConvNormAct(nn.Module):
    """conv (stride 1, same padding) -> LayerNorm2d -> LeakyReLU; key layout ``model.{0,1}``."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=kernel, stride=1, padding=kernel // 2),
            LayerNorm2d(cout),
            nn.LeakyReLU(_SLOPE),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x), act=True, inplace=True)

    @property
    def conv(self) -> nn.Conv2d:
        return cast(nn.Conv2d, self.model[0])

    @property
    def norm(self) -> LayerNorm2d:
        return cast(LayerNorm2d, self.model[1])


class DownBlock(ConvNormAct):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3)
        self.model.append(nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class UpBlock(ConvNormAct):
    """``conv3x3(nearest_upsample_2x(x))`` -> norm -> act, computed as four 2x2 phase convs."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3)

    def phase_weight(self) -> torch.Tensor:
        """(4*Cout, Cin, 2, 2): phase (a,b) kernels; a=0 rows (i-1, i), a=1 rows (i, i+1)."""
        w = self.conv.weight
        rows = (
            torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], 2),
            torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], 2),
        )
        phases: list[torch.Tensor] = []
        for a in (0, 1):
            r = rows[a]
            cols = (
                torch.stack([r[..., 0], r[..., 1] + r[..., 2]], 3),
                torch.stack([r[..., 0] + r[..., 1], r[..., 2]], 3),
            )
            phases.extend(cols)
        return torch.cat(phases, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        weight = getattr(self, "_phase_weight", None)
        if weight is None or weight.device != x.device:
            weight = self.phase_weight()
        b, _, h, w = x.shape
        cout = conv.out_channels
        # a 2x2 conv at padded position p reads low-res rows p-1, p: phase a=0 of output row
        # i sits at p=i, phase a=1 at p=i+1 (same for columns)
        bias = cast(torch.Tensor, conv.bias).repeat(4).to(x.dtype)
        out = F.conv2d(F.pad(x, (1, 1, 1, 1)), weight.to(x.dtype), bias)
        y = torch.empty((b, cout, 2 * h, 2 * w), device=x.device, dtype=out.dtype,
                        memory_format=torch.channels_last if _is_channels_last(x) else torch.contiguous_format)
        yv = y.view(b, cout, h, 2, w, 2)
        for a in (0, 1):
            for c in (0, 1):
                k = 2 * a + c
                yv[:, :, :, a, :, c] = out[:, k * cout : (k + 1) * cout, a : a + h, c : c + w]
        return self.norm(y, act=True, inplace=True)

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        self.__dict__.pop("_phase_weight", None)  # new weights: the cached kernels are stale
        super()._load_from_state_dict(*args, **kwargs)

    def freeze(self) -> None:
        """Cache the phase kernels (call after loading weights; inference only)."""
        with torch.no_grad():
            self._phase_weight = self.phase_weight().detach().contiguous(
                memory_format=torch.channels_last
            )


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class Jump(ConvNormAct):
    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3)


class ResBlock(nn.Module):
    """Official ``FineADAINResBlock2d``: ``x + ADAIN2(conv2(x))`` (conv1/norm1 are unused)."""

    def __init__(self, channels: int, feature: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = ADAIN(channels, feature)
        self.norm2 = ADAIN(channels, feature)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # the official block also computes act(norm1(conv1(x))) and overwrites it unused
        return self.norm2(self.conv2(x), z, inplace=True).add_(x)


class ResBlocks(nn.Module):
    def __init__(self, n: int, channels: int, feature: int) -> None:
        super().__init__()
        self.n = n
        for i in range(n):
            setattr(self, f"res{i}", ResBlock(channels, feature))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        for i in range(self.n):
            x = getattr(self, f"res{i}")(x, z)
        return x


class FinalBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=7, padding=3), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(cast(nn.Conv2d, self.model[0])(x).float())


class FineEncoder(nn.Module):
    def __init__(self, image_nc: int, ngf: int, max_nc: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        self.first = ConvNormAct(image_nc, ngf, 7)
        for i in range(layers):
            cin, cout = min(ngf * 2**i, max_nc), min(ngf * 2 ** (i + 1), max_nc)
            setattr(self, f"down{i}", DownBlock(cin, cout))


class FineDecoder(nn.Module):
    def __init__(self, image_nc: int, feature: int, ngf: int, max_nc: int, layers: int, blocks: int) -> None:
        super().__init__()
        self.layers = layers
        cout = ngf
        for i in reversed(range(layers)):
            cin, cout = min(ngf * 2 ** (i + 1), max_nc), min(ngf * 2**i, max_nc)
            setattr(self, f"up{i}", UpBlock(cin, cout))
            setattr(self, f"res{i}", ResBlocks(blocks, cin, feature))
            setattr(self, f"jump{i}", Jump(cout))
        self.final = FinalBlock(cout, image_nc)


class EditingNet(nn.Module):
    """(source, warped source, descriptor) -> final image (B,3,H,W) in [-1,1]."""

    def __init__(
        self,
        image_nc: int = 3,
        descriptor_nc: int = 256,
        layer: int = 3,
        base_nc: int = 64,
        max_nc: int = 256,
        num_res_blocks: int = 2,
    ) -> None:
        super().__init__()
        self.image_nc = image_nc
        self.encoder = FineEncoder(image_nc * 2, base_nc, max_nc, layer)
        self.decoder = FineDecoder(image_nc, descriptor_nc, base_nc, max_nc, layer, num_res_blocks)

    def source_term(self, image: torch.Tensor) -> torch.Tensor:
        """First conv's response to the source half of ``cat([source, warped])`` (+ bias)."""
        conv = cast(FineEncoder, self.encoder).first.conv
        return F.conv2d(image, conv.weight[:, : self.image_nc], conv.bias, padding=conv.padding)

    def forward(self, source: SourceFeatures, warped: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        enc, dec = self.encoder, self.decoder
        first = cast(ConvNormAct, enc.first)
        # conv(cat(src, warp)) == conv_src(src) + conv_warp(warp): the source part is per clip
        dtype = source.edit_source.dtype
        w_warp = first.conv.weight[:, self.image_nc :].to(dtype)
        x = F.conv2d(warped.to(dtype), w_warp, padding=first.conv.padding)
        x = x.add_(source.edit_source)
        x = first.norm(x, act=True, inplace=True)
        skips = [x]
        for i in range(enc.layers):
            x = getattr(enc, f"down{i}")(x)
            skips.append(x)
        out = skips.pop()
        for i in reversed(range(dec.layers)):
            out = getattr(dec, f"res{i}")(out, z)
            out = getattr(dec, f"up{i}")(out)
            out = getattr(dec, f"jump{i}")(skips.pop()).add_(out)
        return dec.final(out)


@dataclass
class SourceFeatures:
    """Per-clip precomputation from the source image (batch 1 or B)."""

    image: torch.Tensor  # (b,3,H,W) in [-1,1]
    warp_input: torch.Tensor  # warping net's input_layer(image)
    warp_input_stats: tuple[torch.Tensor, torch.Tensor]  # its instance mean / rstd
    edit_source: torch.Tensor  # editing net's first conv on the source channels, with bias


class PIRenderGenerator(nn.Module):
    """The official ``FaceGenerator`` (``face.yaml``) with an inference-oriented forward.

    ``forward(input_image (B,3,H,W) in [-1,1], driving_source (B,73,27))`` returns the
    official dict: ``fake_image`` (B,3,H,W) in [-1,1], ``warp_image``, ``flow_field``.
    """

    def __init__(self, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.padding_mode = padding_mode
        self.mapping_net = MappingNet()
        self.warpping_net = WarpingNet()  # sic: the official attribute name
        self.editing_net = EditingNet()

    def freeze(self) -> PIRenderGenerator:
        """Prepare for inference after weights are loaded (eval mode, cached kernels)."""
        self.eval()
        for module in self.modules():
            if isinstance(module, UpBlock):
                module.freeze()
        return self

    def prepare_source(self, image: torch.Tensor) -> SourceFeatures:
        """(b,3,H,W) source in [-1,1] -> per-clip features reused for every frame."""
        warp_input = self.warpping_net.hourglass.encoder.input_layer(image)
        stats = _moments(warp_input, (2, 3))
        return SourceFeatures(image, warp_input, stats, self.editing_net.source_term(image))

    def describe_sequence(self, padded: torch.Tensor) -> torch.Tensor:
        """(73,L) edge-padded PIRender-order coefficients -> (L-26,256) descriptors.

        Column ``t`` of the result is the descriptor of the window ``padded[:, t:t+27]``;
        with the sequence padded by 13 copies of its first and last frame these windows are
        exactly the official clamped windows.
        """
        feats = self.mapping_net.features(padded[None])[0]  # (256, L-24)
        width = 2 * SEMANTIC_RADIUS + 1 - 24  # each window leaves 3 columns to average
        return feats.unfold(1, width, 1).mean(dim=2).T

    def synthesize(self, source: SourceFeatures, descriptor: torch.Tensor) -> dict[str, torch.Tensor]:
        """Render B frames: descriptor (B,256) -> fake_image (B,3,H,W) in [-1,1] (float32)."""
        flow = self.warpping_net.flow(source, descriptor)
        warped = warp(source.image, flow, self.padding_mode)
        fake = self.editing_net(source, warped, descriptor)
        return {"fake_image": fake, "warp_image": warped, "flow_field": flow.float()}

    def forward(self, input_image: torch.Tensor, driving_source: torch.Tensor) -> dict[str, torch.Tensor]:
        descriptor = self.mapping_net(driving_source)[:, :, 0]
        return self.synthesize(self.prepare_source(input_image), descriptor)
