"""Context modules for the CAJNN feature extractor and its ablation (Eq. 4.2, Table 4.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.ops.layout import is_channels_last


class ASPP(nn.Module):
    """Atrous spatial pyramid: parallel 3x3 convs with the given dilations, concatenated and fused by a 1x1 conv
    (Eq. 4.2; CAJNN uses dilations 1, 3, 4 so the largest field of view covers an 8x8 JPEG block)."""

    def __init__(self, nf: int = 64, dilations: Sequence[int] = (1, 3, 4), act: bool = False) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(nf, nf, 3, 1, d, dilation=d) for d in dilations)
        self.fuse = nn.Conv2d(nf * len(dilations), nf, 1)
        self.act = nn.LeakyReLU(0.2, inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.act(b(x)) for b in self.branches], dim=1))


class SequentialAtrous(nn.Module):
    """The same dilated 3x3 convs applied one after another (the 'sequential atrous' arm of Table 4.4)."""

    def __init__(self, nf: int = 64, dilations: Sequence[int] = (1, 3, 4)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, d in enumerate(dilations):
            layers.append(nn.Conv2d(nf, nf, 3, 1, d, dilation=d))
            if i < len(dilations) - 1:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018, [137]) with a residual connection.

    The 1x1 output projection is zero-initialised so the block starts as the identity. Attention is computed for
    ``chunk`` query positions at a time (the same result; memory O(chunk·HW) instead of O((HW)²)).
    """

    def __init__(self, nf: int = 64, inter: int | None = None, chunk: int = 4096) -> None:
        super().__init__()
        inter = inter or nf // 2
        self.chunk = chunk
        self.theta = nn.Conv2d(nf, inter, 1)
        self.phi = nn.Conv2d(nf, inter, 1)
        self.g = nn.Conv2d(nf, inter, 1)
        self.out = nn.Conv2d(inter, nf, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)  # b, hw, c'
        k = self.phi(x).flatten(2)  # b, c', hw
        v = self.g(x).flatten(2).transpose(1, 2)  # b, hw, c'
        y = torch.cat([torch.softmax(qc @ k, dim=-1) @ v for qc in q.split(self.chunk, dim=1)], dim=1)  # b, hw, c'
        y = y.view(b, h, w, -1).permute(0, 3, 1, 2) if is_channels_last(x) else y.transpose(1, 2).reshape(b, -1, h, w)
        return x + self.out(y)


class MultiScaleNonLocal(nn.Module):
    """The 'non-local module' arm of Table 4.4 as Sec. 4.4.5 describes it ([136] NLRN, [137]): the features are
    downsampled by strided convolutions and processed at several scales. Per scale s (a power of two):
    log2(s) × (3x3 conv, stride 2, LReLU) → embedded-Gaussian :class:`NonLocalBlock` → bilinear back to the input
    size → 3x3 conv → LReLU; the input and every branch are concatenated and fused by a 1x1 conv.

    At nf = 64 with scales (2, 4): 213,696 parameters (ASPP: 123,136), attention over HW/4 and HW/16 positions.
    """

    def __init__(self, nf: int = 64, scales: Sequence[int] = (2, 4), inter: int | None = None) -> None:
        super().__init__()
        for s in scales:
            if s < 2 or s & (s - 1):
                raise ValueError(f"non-local scales must be powers of two ≥ 2, got {s}")
        self.down = nn.ModuleList(
            nn.Sequential(*[m for _ in range(s.bit_length() - 1)
                            for m in (nn.Conv2d(nf, nf, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True))])
            for s in scales)
        self.nonlocal_blocks = nn.ModuleList(NonLocalBlock(nf, inter) for _ in scales)
        self.up = nn.ModuleList(nn.Conv2d(nf, nf, 3, 1, 1) for _ in scales)
        self.fuse = nn.Conv2d(nf * (len(scales) + 1), nf, 1)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for down, nl, up in zip(self.down, self.nonlocal_blocks, self.up, strict=True):
            y = F.interpolate(nl(down(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)
            feats.append(self.act(up(y)))
        return self.fuse(torch.cat(feats, dim=1))


def make_context(kind: str, nf: int = 64, dilations: Sequence[int] = (1, 3, 4)) -> nn.Module:
    """``none`` | ``aspp`` | ``sequential`` | ``nonlocal`` (multi-scale, :class:`MultiScaleNonLocal`) |
    ``nonlocal_single`` (one full-resolution :class:`NonLocalBlock`) — the context-module switch of Table 4.4."""
    if kind == "none":
        return nn.Identity()
    if kind == "aspp":
        return ASPP(nf, dilations)
    if kind == "sequential":
        return SequentialAtrous(nf, dilations)
    if kind == "nonlocal":
        return MultiScaleNonLocal(nf)
    if kind == "nonlocal_single":
        return NonLocalBlock(nf)
    raise ValueError(f"unknown context module {kind!r} (none | aspp | sequential | nonlocal | nonlocal_single)")
