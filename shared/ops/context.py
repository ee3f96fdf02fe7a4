"""Context modules for the CAJNN feature extractor and its ablation (Eq. 4.2, Table 4.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


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
    """Embedded-Gaussian non-local block (Wang et al. 2018) with a residual connection (Table 4.4 arm).

    The 1x1 output projection is zero-initialised so the block starts as the identity.
    """

    def __init__(self, nf: int = 64, inter: int | None = None) -> None:
        super().__init__()
        inter = inter or nf // 2
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
        attn = torch.softmax(q @ k, dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.out(y)


def make_context(kind: str, nf: int = 64, dilations: Sequence[int] = (1, 3, 4)) -> nn.Module:
    """``none`` | ``aspp`` | ``sequential`` | ``nonlocal`` — the context-module switch of Table 4.4."""
    if kind == "none":
        return nn.Identity()
    if kind == "aspp":
        return ASPP(nf, dilations)
    if kind == "sequential":
        return SequentialAtrous(nf, dilations)
    if kind == "nonlocal":
        return NonLocalBlock(nf)
    raise ValueError(f"unknown context module {kind!r} (none | aspp | sequential | nonlocal)")
