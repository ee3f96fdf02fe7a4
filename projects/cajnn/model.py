"""CAJNN: context-aware joint compression-artifact reduction and super-resolution network (Fig. 4.2).

conv 3→nf (feature extractor) → context module (ASPP, dilations 1/3/4, Eq. 4.2) → 20 RRDB(nf, gc) trunk →
sub-pixel upsampling (two ×2 conv+PixelShuffle stages, Eq. 4.3-4.4) → two 3×3 enhancement convs → + bilinear
×s of the input (long skip, Eq. 4.5). The default lands at 14.85M parameters (Table 4.1 reports 14.8M).

Table 4.4 switches: ``context`` none | aspp | sequential | nonlocal (multi-scale, ``shared.ops.MultiScaleNonLocal``);
``upsampler`` pixelshuffle | upconv (transposed convolutions — the "upconvolution" that Sec. 4.3.1 compares
PixelShuffle with) | nearest_conv (ESRGAN's nearest ×2 + conv, not in the chapter).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from shared.ops import RRDB, PixelShuffleUpsampler, make_context, make_layer


class TransposedConvUpsampler(nn.Sequential):
    """Up-convolution: log2(scale) × (4×4 transposed conv, stride 2, nf→nf, LReLU 0.1) — the same staging and
    activation as the PixelShuffle upsampler, with the upsampling done by a learned deconvolution in the HR domain
    (Sec. 4.3.1: PixelShuffle moves that computation to the LR domain). 65,600 parameters per stage at nf = 64."""

    def __init__(self, nf: int, scale: int) -> None:
        layers: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            layers += [nn.ConvTranspose2d(nf, nf, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True)]
        super().__init__(*layers)


class NearestConvUpsampler(nn.Sequential):
    """ESRGAN's nearest ×2 + 3×3 conv + LReLU stages (not in the chapter; kept for comparison)."""

    def __init__(self, nf: int, scale: int) -> None:
        layers: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(nf, nf, 3, 1, 1),
                       nn.LeakyReLU(0.2, inplace=True)]
        super().__init__(*layers)


UPSAMPLERS = ("pixelshuffle", "upconv", "nearest_conv")


class CAJNN(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 3, nf: int = 64, gc: int = 32, n_blocks: int = 20,
                 scale: int = 4, context: str = "aspp", dilations: Sequence[int] = (1, 3, 4),
                 upsampler: str = "pixelshuffle", trunk_conv: bool = False, long_skip: bool = True,
                 skip_mode: str = "bilinear", lr_branch: bool = False) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"CAJNN supports scales 2, 4, 8; got {scale}")
        if skip_mode not in ("bilinear", "bicubic"):
            raise ValueError(f"unknown long-skip interpolation {skip_mode!r} (bilinear | bicubic)")
        self.scale, self.long_skip, self.skip_mode = scale, long_skip, skip_mode
        self.conv_first = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.context = make_context(context, nf, dilations)
        self.trunk = make_layer(RRDB, n_blocks, nf=nf, gc=gc)
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1) if trunk_conv else None
        if upsampler == "pixelshuffle":
            self.upsample = PixelShuffleUpsampler(nf, scale, act=True, icnr=True)
        elif upsampler == "upconv":
            self.upsample = TransposedConvUpsampler(nf, scale)
        elif upsampler == "nearest_conv":
            self.upsample = NearestConvUpsampler(nf, scale)
        else:
            raise ValueError(f"unknown upsampler {upsampler!r} ({' | '.join(UPSAMPLERS)})")
        # Ĝ(f^{L'}) of Eq. 4.7: the clean-LR estimate from the context features (input + predicted correction)
        self.lr_out = nn.Conv2d(nf, out_channels, 3, 1, 1) if lr_branch else None
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor, return_aux: bool = False) -> Tensor | dict[str, Tensor]:
        """``x``: B×3×h×w JPEG LR in [0, 1] → B×3×sh×sw; ``return_aux`` adds ``lr`` (Ĝ(f^{L'}), Eq. 4.7)."""
        feat = self.context(self.conv_first(x))
        lr = x + self.lr_out(feat) if return_aux and self.lr_out is not None else None
        body = self.trunk(feat)
        if self.trunk_conv is not None:
            body = self.trunk_conv(body)
        feat = feat + body
        out = self.conv_last(self.lrelu(self.conv_hr(self.upsample(feat))))
        if self.long_skip:
            out = out + F.interpolate(x, scale_factor=self.scale, mode=self.skip_mode, align_corners=False)
        if return_aux:
            return {"out": out, "lr": lr} if lr is not None else {"out": out}
        return out

