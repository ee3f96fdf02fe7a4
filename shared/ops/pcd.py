"""Pyramid feature extraction and PCD-style deformable alignment (Ch. 6 Eq. 6.2-6.3; EDVR's PCD pattern).

Names follow the official Zooming-Slow-Mo code (``fea_L2_conv1``, ``L3_offset_conv1``, ``L3_dcnpack``, …) so a
checkpoint maps onto these modules with a suffix rename only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.ops.deform import Backend, ModulatedDeformConv2d


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class FeaturePyramid(nn.Module):
    """L1 features → [L1, L2, …]: per extra level two 3x3 convs (the first with stride 2), each with LReLU(0.1)."""

    def __init__(self, nf: int = 64, levels: int = 3) -> None:
        super().__init__()
        self.levels = levels
        for lvl in range(2, levels + 1):
            self.add_module(f"fea_L{lvl}_conv1", nn.Conv2d(nf, nf, 3, 2, 1))
            self.add_module(f"fea_L{lvl}_conv2", nn.Conv2d(nf, nf, 3, 1, 1))
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, l1: Tensor) -> list[Tensor]:
        pyr = [l1]
        for lvl in range(2, self.levels + 1):
            x = self.lrelu(getattr(self, f"fea_L{lvl}_conv1")(pyr[-1]))
            pyr.append(self.lrelu(getattr(self, f"fea_L{lvl}_conv2")(x)))
        return pyr


class PCDAlign(nn.Module):
    """Deformably sample the pyramid ``a`` with offsets predicted from ``[a, b]``, coarse to fine.

    Per level l (coarsest first): offset feature from conv(cat(a_l, b_l)) (and, below the top, the ×2-upsampled
    coarser offset feature multiplied by 2); a :class:`ModulatedDeformConv2d` samples a_l; below the top the result
    is fused with the upsampled coarser aligned feature. LReLU(0.1) everywhere except after the finest fusion.
    ``cascade=True`` adds EDVR's final refinement at L1 (absent in Zooming-Slow-Mo).
    """

    def __init__(
        self,
        nf: int = 64,
        groups: int = 8,
        levels: int = 3,
        cascade: bool = False,
        max_offset: float | None = None,
        backend: Backend | None = None,
    ) -> None:
        super().__init__()
        self.levels, self.cascade = levels, cascade

        def dcn() -> ModulatedDeformConv2d:
            return ModulatedDeformConv2d(nf, nf, 3, 1, 1, deformable_groups=groups, max_offset=max_offset,
                                         backend=backend)

        for lvl in range(levels, 0, -1):
            top = lvl == levels
            self.add_module(f"L{lvl}_offset_conv1", nn.Conv2d(2 * nf, nf, 3, 1, 1))
            if top:
                self.add_module(f"L{lvl}_offset_conv2", nn.Conv2d(nf, nf, 3, 1, 1))
            else:
                self.add_module(f"L{lvl}_offset_conv2", nn.Conv2d(2 * nf, nf, 3, 1, 1))
                self.add_module(f"L{lvl}_offset_conv3", nn.Conv2d(nf, nf, 3, 1, 1))
            self.add_module(f"L{lvl}_dcnpack", dcn())
            if not top:
                self.add_module(f"L{lvl}_fea_conv", nn.Conv2d(2 * nf, nf, 3, 1, 1))
        if cascade:
            self.cas_offset_conv1 = nn.Conv2d(2 * nf, nf, 3, 1, 1)
            self.cas_offset_conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.cas_dcnpack = dcn()
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, a: list[Tensor], b: list[Tensor]) -> Tensor:
        act = self.lrelu
        offset = feat = None
        for lvl in range(self.levels, 0, -1):
            i = lvl - 1
            o = act(getattr(self, f"L{lvl}_offset_conv1")(torch.cat((a[i], b[i]), 1)))
            if offset is None:
                o = act(getattr(self, f"L{lvl}_offset_conv2")(o))
            else:
                o = act(getattr(self, f"L{lvl}_offset_conv2")(torch.cat((o, _up2(offset) * 2), 1)))
                o = act(getattr(self, f"L{lvl}_offset_conv3")(o))
            offset = o
            f = getattr(self, f"L{lvl}_dcnpack")(a[i], o)
            if feat is not None:
                f = getattr(self, f"L{lvl}_fea_conv")(torch.cat((f, _up2(feat)), 1))
            feat = act(f) if lvl > 1 else f
        if self.cascade:
            o = act(self.cas_offset_conv1(torch.cat((feat, b[0]), 1)))
            o = act(self.cas_offset_conv2(o))
            feat = act(self.cas_dcnpack(feat, o))
        return feat
