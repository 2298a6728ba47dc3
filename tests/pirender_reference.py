"""A deliberately plain transcription of the official PIRender generator (test oracle).

Written from the published architecture (RenYurui/PIRender ``face_model.py``,
``base_function.py``, ``flow_util.py``, config ``face.yaml``), one module per official
block, with the official forward passes *including* their quirks (the residual blocks
compute a first branch that is thrown away; the editing net upsamples with nearest
neighbour before a 3x3 convolution). No optimisation here: this is what the fast
implementation in ``bench_plugins.renderers.pirender_net`` must reproduce. The state-dict
keys equal the official ``net_G_ema`` keys, so one checkpoint loads into both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.1)


class RefLayerNorm2d(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[1:]
        return F.layer_norm(x, shape, self.weight.expand(shape), self.bias.expand(shape))


class RefADAIN(nn.Module):
    def __init__(self, channels: int, feature: int) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(nn.Linear(feature, 128), nn.ReLU())
        self.mlp_gamma = nn.Linear(128, channels)
        self.mlp_beta = nn.Linear(128, channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        hidden = self.mlp_shared(z.reshape(z.shape[0], -1))
        gamma = self.mlp_gamma(hidden)[:, :, None, None]
        beta = self.mlp_beta(hidden)[:, :, None, None]
        return normalized * (1 + gamma) + beta


class RefMappingNet(nn.Module):
    def __init__(self, coeff_nc: int = 73, descriptor_nc: int = 256, layer: int = 3) -> None:
        super().__init__()
        self.layer = layer
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, descriptor_nc, kernel_size=7))
        for i in range(layer):
            block = nn.Sequential(
                _lrelu(), nn.Conv1d(descriptor_nc, descriptor_nc, kernel_size=3, dilation=3)
            )
            setattr(self, f"encoder{i}", block)
        self.pooling = nn.AdaptiveAvgPool1d(1)

    def forward(self, semantics: torch.Tensor) -> torch.Tensor:
        out = self.first(semantics)
        for i in range(self.layer):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        return self.pooling(out)


class RefEncoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, feature: int) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1)
        self.conv_1 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1)
        self.norm_0 = RefADAIN(cin, feature)
        self.norm_1 = RefADAIN(cout, feature)
        self.actvn = _lrelu()

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_0(self.actvn(self.norm_0(x, z)))
        return self.conv_1(self.actvn(self.norm_1(x, z)))


class RefDecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, hidden: int, feature: int) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(cin, hidden, kernel_size=3, stride=1, padding=1)
        self.conv_1 = nn.ConvTranspose2d(hidden, cout, 3, stride=2, padding=1, output_padding=1)
        self.conv_s = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
        self.norm_0 = RefADAIN(cin, feature)
        self.norm_1 = RefADAIN(hidden, feature)
        self.norm_s = RefADAIN(cin, feature)
        self.actvn = _lrelu()

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.actvn(self.norm_s(x, z)))
        dx = self.conv_0(self.actvn(self.norm_0(x, z)))
        dx = self.conv_1(self.actvn(self.norm_1(dx, z)))
        return shortcut + dx


class RefADAINEncoder(nn.Module):
    def __init__(self, image_nc: int, feature: int, ngf: int, max_nc: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        self.input_layer = nn.Conv2d(image_nc, ngf, kernel_size=7, stride=1, padding=3)
        for i in range(layers):
            cin = min(ngf * 2**i, max_nc)
            cout = min(ngf * 2 ** (i + 1), max_nc)
            setattr(self, f"encoder{i}", RefEncoderBlock(cin, cout, feature))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> list[torch.Tensor]:
        out = self.input_layer(x)
        outs = [out]
        for i in range(self.layers):
            out = getattr(self, f"encoder{i}")(out, z)
            outs.append(out)
        return outs


class RefADAINDecoder(nn.Module):
    def __init__(self, feature: int, ngf: int, max_nc: int, enc_layers: int, dec_layers: int) -> None:
        super().__init__()
        self.enc_layers = enc_layers
        self.dec_layers = dec_layers
        cout = 0
        for i in reversed(range(enc_layers - dec_layers, enc_layers)):
            cin = min(ngf * 2 ** (i + 1), max_nc)
            if i != enc_layers - 1:
                cin *= 2
            cout = min(ngf * 2**i, max_nc)
            setattr(self, f"decoder{i}", RefDecoderBlock(cin, cout, cout, feature))
        self.output_nc = 2 * cout

    def forward(self, skips: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for i in reversed(range(self.enc_layers - self.dec_layers, self.enc_layers)):
            out = getattr(self, f"decoder{i}")(out, z)
            out = torch.cat([out, skips.pop()], 1)
        return out


class RefHourglass(nn.Module):
    def __init__(self, image_nc: int, feature: int, ngf: int, max_nc: int, enc: int, dec: int) -> None:
        super().__init__()
        self.encoder = RefADAINEncoder(image_nc, feature, ngf, max_nc, enc)
        self.decoder = RefADAINDecoder(feature, ngf, max_nc, enc, dec)
        self.output_nc = self.decoder.output_nc

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x, z), z)


def ref_warp(source: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Official ``convert_flow_to_deformation`` + ``warp_image``."""
    _, _, h, w = flow.shape
    xs = 2 * (torch.arange(w).to(flow) / (w - 1)) - 1
    ys = 2 * (torch.arange(h).to(flow) / (h - 1)) - 1
    grid = torch.stack([xs.view(1, -1).repeat(h, 1), ys.view(-1, 1).repeat(1, w)], 2)
    flow_norm = torch.cat([2 * flow[:, :1] / (w - 1), 2 * flow[:, 1:] / (h - 1)], 1)
    deformation = grid[None] + flow_norm.permute(0, 2, 3, 1)
    hs, ws = source.shape[2:]
    if (h, w) != (hs, ws):
        deformation = F.interpolate(
            deformation.permute(0, 3, 1, 2), size=(hs, ws), mode="bilinear", align_corners=False
        ).permute(0, 2, 3, 1)
    return F.grid_sample(
        source, deformation, mode="bilinear", padding_mode=padding_mode, align_corners=False
    )


class RefWarpingNet(nn.Module):
    def __init__(self, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.padding_mode = padding_mode
        self.hourglass = RefHourglass(3, 256, 32, 256, 5, 3)
        nc = self.hourglass.output_nc
        self.flow_out = nn.Sequential(
            RefLayerNorm2d(nc), _lrelu(), nn.Conv2d(nc, 2, kernel_size=7, stride=1, padding=3)
        )

    def forward(self, image: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        flow = self.flow_out(self.hourglass(image, z))
        return {"flow_field": flow, "warp_image": ref_warp(image, flow, self.padding_mode)}


def _conv_norm_act(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=k // 2), RefLayerNorm2d(cout), _lrelu()]


class RefFirst(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.model = nn.Sequential(*_conv_norm_act(cin, cout, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class RefDown(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.model = nn.Sequential(*_conv_norm_act(cin, cout, 3), nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class RefUp(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.model = nn.Sequential(*_conv_norm_act(cin, cout, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(F.interpolate(x, scale_factor=2))


class RefJump(RefFirst):
    def __init__(self, channels: int) -> None:
        nn.Module.__init__(self)
        self.model = nn.Sequential(*_conv_norm_act(channels, channels, 3))


class RefResBlock(nn.Module):
    def __init__(self, channels: int, feature: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = RefADAIN(channels, feature)
        self.norm2 = RefADAIN(channels, feature)
        self.actvn = _lrelu()

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dx = self.actvn(self.norm1(self.conv1(x), z))  # official: computed, then overwritten
        dx = self.norm2(self.conv2(x), z)
        return dx + x


class RefResBlocks(nn.Module):
    def __init__(self, n: int, channels: int, feature: int) -> None:
        super().__init__()
        self.n = n
        for i in range(n):
            setattr(self, f"res{i}", RefResBlock(channels, feature))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        for i in range(self.n):
            x = getattr(self, f"res{i}")(x, z)
        return x


class RefFinal(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=7, padding=3), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class RefFineEncoder(nn.Module):
    def __init__(self, image_nc: int, ngf: int, max_nc: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        self.first = RefFirst(image_nc, ngf)
        for i in range(layers):
            setattr(self, f"down{i}", RefDown(min(ngf * 2**i, max_nc), min(ngf * 2 ** (i + 1), max_nc)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.first(x)
        outs = [x]
        for i in range(self.layers):
            x = getattr(self, f"down{i}")(x)
            outs.append(x)
        return outs


class RefFineDecoder(nn.Module):
    def __init__(self, image_nc: int, feature: int, ngf: int, max_nc: int, layers: int, blocks: int) -> None:
        super().__init__()
        self.layers = layers
        cout = ngf
        for i in reversed(range(layers)):
            cin = min(ngf * 2 ** (i + 1), max_nc)
            cout = min(ngf * 2**i, max_nc)
            setattr(self, f"up{i}", RefUp(cin, cout))
            setattr(self, f"res{i}", RefResBlocks(blocks, cin, feature))
            setattr(self, f"jump{i}", RefJump(cout))
        self.final = RefFinal(cout, image_nc)

    def forward(self, skips: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for i in reversed(range(self.layers)):
            out = getattr(self, f"res{i}")(out, z)
            out = getattr(self, f"up{i}")(out)
            out = getattr(self, f"jump{i}")(skips.pop()) + out
        return self.final(out)


class RefEditingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = RefFineEncoder(6, 64, 256, 3)
        self.decoder = RefFineDecoder(3, 256, 64, 256, 3, 2)

    def forward(self, image: torch.Tensor, warped: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(torch.cat([image, warped], 1)), z)


class RefFaceGenerator(nn.Module):
    """Official ``FaceGenerator`` with the ``face.yaml`` configuration."""

    def __init__(self, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.mapping_net = RefMappingNet()
        self.warpping_net = RefWarpingNet(padding_mode)
        self.editing_net = RefEditingNet()

    def forward(self, image: torch.Tensor, semantics: torch.Tensor) -> dict[str, torch.Tensor]:
        descriptor = self.mapping_net(semantics)
        out = self.warpping_net(image, descriptor)
        out["fake_image"] = self.editing_net(image, out["warp_image"], descriptor)
        return out


def ref_windows(coeffs_pirender: torch.Tensor, radius: int = 13) -> torch.Tensor:
    """(T,73) PIRender-order coefficients -> (T,73,2r+1) clamped windows (official dataset)."""
    n = coeffs_pirender.shape[0]
    windows = []
    for t in range(n):
        index = [min(max(i, 0), n - 1) for i in range(t - radius, t + radius + 1)]
        windows.append(coeffs_pirender[index].T)
    return torch.stack(windows)
