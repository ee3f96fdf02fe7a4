"""CAJNN: context-aware joint compression-artifact reduction and super-resolution network (Fig. 4.2).

conv 3→nf (feature extractor) → context module (ASPP, dilations 1/3/4, Eq. 4.2) → 20 RRDB(nf, gc) trunk →
sub-pixel upsampling (two ×2 conv+PixelShuffle stages, Eq. 4.3-4.4) → two 3×3 enhancement convs → + bilinear
×s of the input (long skip, Eq. 4.5). The default lands at 14.85M parameters (Table 4.1 reports 14.8M).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from shared.ops import RRDB, PixelShuffleUpsampler, make_context, make_layer


class UpConvUpsampler(nn.Sequential):
    """ESRGAN's nearest ×2 + 3×3 conv + LReLU stages (the 'no PixelShuffle' arm of Table 4.4)."""

    def __init__(self, nf: int, scale: int) -> None:
        layers: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nf, nf, 3, 1, 1),
                       nn.LeakyReLU(0.2, inplace=True)]
        super().__init__(*layers)


class CAJNN(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 3, nf: int = 64, gc: int = 32, n_blocks: int = 20,
                 scale: int = 4, context: str = "aspp", dilations: Sequence[int] = (1, 3, 4),
                 upsampler: str = "pixelshuffle", trunk_conv: bool = False, long_skip: bool = True) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"CAJNN supports scales 2, 4, 8; got {scale}")
        self.scale, self.long_skip = scale, long_skip
        self.conv_first = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.context = make_context(context, nf, dilations)
        self.trunk = make_layer(RRDB, n_blocks, nf=nf, gc=gc)
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1) if trunk_conv else None
        if upsampler == "pixelshuffle":
            self.upsample = PixelShuffleUpsampler(nf, scale, act=True, icnr=True)
        elif upsampler == "upconv":
            self.upsample = UpConvUpsampler(nf, scale)
        else:
            raise ValueError(f"unknown upsampler {upsampler!r} (pixelshuffle | upconv)")
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.context(self.conv_first(x))
        body = self.trunk(feat)
        if self.trunk_conv is not None:
            body = self.trunk_conv(body)
        feat = feat + body
        out = self.conv_last(self.lrelu(self.conv_hr(self.upsample(feat))))
        if self.long_skip:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out


class Bicubic(nn.Module):
    """The 'Bicubic' baseline row of Table 4.1: upsample the JPEG LR input (no parameters)."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
