"""Sub-pixel upsampling (Eq. 4.3-4.4) with ICNR initialisation, and space-to-depth (Ch. 5 reference extractor)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def icnr_(weight: Tensor, scale: int, init=nn.init.kaiming_normal_) -> Tensor:
    """ICNR init: every group of ``scale²`` output channels feeding one PixelShuffle output channel gets the same
    kernel, so the freshly initialised conv + PixelShuffle equals nearest upsampling of a conv (no checkerboard)."""
    out_ch, in_ch, kh, kw = weight.shape
    r2 = scale * scale
    if out_ch % r2:
        raise ValueError(f"ICNR: out channels {out_ch} not divisible by scale² = {r2}")
    sub = torch.empty(out_ch // r2, in_ch, kh, kw, dtype=weight.dtype, device=weight.device)
    init(sub)
    weight.copy_(sub.repeat_interleave(r2, dim=0))
    return weight


class PixelShuffleUpsampler(nn.Sequential):
    """Sub-pixel upsampling by ``scale`` (a power of two → log2(scale) stages of conv nf→4nf + PixelShuffle(2),
    3 → one stage of conv nf→9nf + PixelShuffle(3)), each followed by LReLU(0.1) if ``act``.

    Layer names: ``0`` conv, ``1`` shuffle, ``2`` activation, ``3`` conv, … ``out_channels`` (default nf) sets the
    channels after the last stage (the last conv then outputs out_channels·r²).
    """

    def __init__(
        self, nf: int, scale: int, out_channels: int | None = None, act: bool = True, icnr: bool = True
    ) -> None:
        if scale & (scale - 1) == 0 and scale >= 2:
            stages = [2] * int(math.log2(scale))
        elif scale == 3:
            stages = [3]
        else:
            raise ValueError(f"PixelShuffleUpsampler supports scales 2^n and 3, got {scale}")
        layers: list[nn.Module] = []
        for i, r in enumerate(stages):
            cout = (out_channels or nf) if i == len(stages) - 1 else nf
            conv = nn.Conv2d(nf, cout * r * r, 3, 1, 1)
            if icnr:
                icnr_(conv.weight, r)
                nn.init.zeros_(conv.bias)
            layers += [conv, nn.PixelShuffle(r)]
            if act:
                layers.append(nn.LeakyReLU(0.1, inplace=True))
        super().__init__(*layers)


def space_to_depth(x: Tensor, block: int) -> Tensor:
    """B×C×H×W → B×(C·block²)×(H/block)×(W/block), the inverse of PixelShuffle (Ch. 5 HR reference extractor)."""
    if x.shape[-1] % block or x.shape[-2] % block:
        raise ValueError(f"space_to_depth: spatial size {tuple(x.shape[-2:])} not divisible by {block}")
    return F.pixel_unshuffle(x, block)


class SpaceToDepth(nn.Module):
    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return space_to_depth(x, self.block)
