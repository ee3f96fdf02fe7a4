"""Zooming Slow-Mo (ZSM): one-stage space-time video super-resolution (Chapter 6, Fig. 6.1, 6.5, 6.6).

LR, low-frame-rate frames B×N×3×H×W → HR, high-frame-rate frames B×(2N−1)×3×4H×4W:

1. feature extraction: conv + LReLU, k1 = 5 residual blocks (L1), a strided-conv pyramid (L2, L3);
2. deformable feature interpolation (DFI, Eq. 6.1-6.4): for each neighbouring pair a two-branch PCD samples
   each frame with offsets predicted from both, a 1×1 conv blends them (α, β of Eq. 6.4);
3. temporal aggregation over the 2N−1 features: bidirectional deformable ConvLSTM (Eq. 6.5-6.6) — one forward
   network run on the sequence and on its reverse, fused by a 1×1 conv;
4. reconstruction: k2 = 40 residual blocks, two conv + PixelShuffle(2) stages, HR conv, output conv; no global skip.

Defaults reproduce the official network exactly (11,102,771 parameters). Ablation switches (Table 6.5):
``interpolation`` = ``deformable`` (DFI) | ``naive`` (convolutional blending, model a); ``temporal`` = ``none`` (b) |
``convlstm`` (c) | ``dconvlstm`` (d) | ``bidconvlstm`` (e, f); ``gfi`` adds the LR synthesis head ρ (k3 residual
blocks + conv) for the cyclic interpolation losses of Eq. 6.8-6.10 (model f). ``global_skip`` (not in the
paper, off by default) adds a bicubic + frame-blend skip so tiny demo networks only learn a residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.ops import FeaturePyramid, PCDAlign, ResidualBlockNoBN, make_layer
from shared.ops.deform import Backend
from shared.ops.layout import cat_channels, stack_frames, zeros_like_layout


class TwoBranchPCD(nn.Module):
    """Official ``PCD_Align``: branch 1 samples ``a`` (offsets from [a, b]), branch 2 samples ``b`` (offsets from
    [b, a]); the two aligned L1 features are concatenated (2·nf channels). No weight sharing, no cascading."""

    def __init__(self, nf: int = 64, groups: int = 8, max_offset: float | None = None,
                 backend: Backend | None = None) -> None:
        super().__init__()
        self.branch1 = PCDAlign(nf, groups, 3, cascade=False, max_offset=max_offset, backend=backend)
        self.branch2 = PCDAlign(nf, groups, 3, cascade=False, max_offset=max_offset, backend=backend)

    def forward(self, a: list[Tensor], b: list[Tensor]) -> Tensor:
        return torch.cat((self.branch1(a, b), self.branch2(b, a)), dim=1)


class NaiveBlend(nn.Module):
    """Model (a) of Table 6.5: the two neighbours' L1 features blended by convolutions, no deformable sampling."""

    def __init__(self, nf: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2 * nf, 2 * nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(2 * nf, 2 * nf, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, a: list[Tensor], b: list[Tensor]) -> Tensor:
        return self.conv2(self.lrelu(self.conv1(torch.cat((a[0], b[0]), dim=1))))


class EasyPCD(nn.Module):
    """State alignment of the deformable ConvLSTM (official ``Easy_PCD``): its own pyramid, a two-branch PCD on
    (f1, f2), and a 1×1 fusion back to nf channels."""

    def __init__(self, nf: int = 64, groups: int = 8, max_offset: float | None = None,
                 backend: Backend | None = None) -> None:
        super().__init__()
        self.pyramid = FeaturePyramid(nf, 3)
        self.pcd_align = TwoBranchPCD(nf, groups, max_offset, backend)
        self.fusion = nn.Conv2d(2 * nf, nf, 1)

    def forward(self, f1: Tensor, f2: Tensor) -> Tensor:
        return self.fusion(self.pcd_align(self.pyramid(f1), self.pyramid(f2)))


class ConvLSTMCell(nn.Module):
    """ConvLSTM (Shi et al. 2015): one 3×3 conv on [x, h] → gates i, f, o, g (in that order)."""

    def __init__(self, in_channels: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, 3, 1, 1)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i, f, o, g = torch.split(self.conv(torch.cat((x, h), dim=1)), self.hidden, dim=1)
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_next), c_next


class DeformableConvLSTM(nn.Module):
    """ConvLSTM whose previous hidden and cell states are aligned to the current input by deformable sampling
    (Eq. 6.6): h̃ = pcd_h(x_t, h), c̃ = pcd_c(x_t, c), then the ConvLSTM step on (x_t, h̃, c̃).
    ``deformable=False`` is the vanilla ConvLSTM of model (c)."""

    def __init__(self, nf: int = 64, groups: int = 8, deformable: bool = True, max_offset: float | None = None,
                 backend: Backend | None = None) -> None:
        super().__init__()
        self.deformable = deformable
        if deformable:
            self.pcd_h = EasyPCD(nf, groups, max_offset, backend)
            self.pcd_c = EasyPCD(nf, groups, max_offset, backend)
        self.cell = ConvLSTMCell(nf, nf)

    def forward(self, seq: Tensor) -> Tensor:
        b, t, c, h, w = seq.shape
        hid = zeros_like_layout(seq[:, 0], b, self.cell.hidden, h, w)
        cell = zeros_like_layout(seq[:, 0], b, self.cell.hidden, h, w)
        outs = []
        for i in range(t):
            x = seq[:, i]
            if self.deformable:
                hid, cell = self.pcd_h(x, hid), self.pcd_c(x, cell)
            hid, cell = self.cell(x, hid, cell)
            outs.append(hid)
        return stack_frames(outs)


class BidirectionalTemporal(nn.Module):
    """One forward network applied to the sequence and to its reverse (shared weights), outputs concatenated per
    time step and fused by a 1×1 conv (official ``BiDeformableConvLSTM``)."""

    def __init__(self, nf: int = 64, groups: int = 8, deformable: bool = True, max_offset: float | None = None,
                 backend: Backend | None = None) -> None:
        super().__init__()
        self.forward_net = DeformableConvLSTM(nf, groups, deformable, max_offset, backend)
        self.conv_1x1 = nn.Conv2d(2 * nf, nf, 1)

    def forward(self, seq: Tensor) -> Tensor:
        fwd = self.forward_net(seq)
        bwd = self.forward_net(seq.flip(1)).flip(1)
        b, t, c, h, w = fwd.shape
        fused = self.conv_1x1(cat_channels([fwd, bwd]).reshape(b * t, 2 * c, h, w))
        return fused.view(b, t, c, h, w)


def make_temporal(kind: str, nf: int, groups: int, max_offset, backend) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "convlstm":
        return DeformableConvLSTM(nf, groups, deformable=False)
    if kind == "dconvlstm":
        return DeformableConvLSTM(nf, groups, True, max_offset, backend)
    if kind == "bidconvlstm":
        return BidirectionalTemporal(nf, groups, True, max_offset, backend)
    raise ValueError(f"unknown temporal module {kind!r} (none | convlstm | dconvlstm | bidconvlstm)")


class ZSM(nn.Module):
    def __init__(self, nf: int = 64, groups: int = 8, front_blocks: int = 5, back_blocks: int = 40,
                 interpolation: str = "deformable", temporal: str = "bidconvlstm", gfi: bool = False,
                 gfi_blocks: int = 5, max_offset: float | None = None, backend: Backend | None = None,
                 global_skip: bool = False) -> None:
        super().__init__()
        if interpolation not in ("deformable", "naive"):
            raise ValueError(f"unknown feature interpolation {interpolation!r} (deformable | naive)")
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.feature_extraction = make_layer(ResidualBlockNoBN, front_blocks, nf=nf)
        # the naive blend (model a) uses L1 only, so it gets no L2/L3 convs
        self.pyramid = FeaturePyramid(nf, 3 if interpolation == "deformable" else 1)
        self.pcd_align = (TwoBranchPCD(nf, groups, max_offset, backend) if interpolation == "deformable"
                          else NaiveBlend(nf))
        self.fusion = nn.Conv2d(2 * nf, nf, 1)
        self.temporal = make_temporal(temporal, nf, groups, max_offset, backend)
        self.recon_trunk = make_layer(ResidualBlockNoBN, back_blocks, nf=nf)
        self.upconv1 = nn.Conv2d(nf, nf * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(nf, nf * 4, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)
        self.lr_head = (nn.Sequential(make_layer(ResidualBlockNoBN, gfi_blocks, nf=nf), nn.Conv2d(nf, 3, 3, 1, 1))
                        if gfi else None)
        self.lrelu = nn.LeakyReLU(0.1, inplace=True)
        # not in the paper: adds bicubic ×4 of the inputs and their blends, so small demo nets learn a residual
        self.skip = BicubicBlend(4) if global_skip else None
        if self.lr_head is None:
            self._register_load_state_dict_pre_hook(self._drop_gfi_head)

    @staticmethod
    def _drop_gfi_head(state_dict, prefix, *args) -> None:
        """The GFI head ρ is used in training only (Sec. 6.3.5): a checkpoint of model (f) loads into the inference
        network (e) — its ``lr_head.*`` tensors are dropped; every other tensor must still match exactly."""
        for key in [k for k in state_dict if k.startswith(f"{prefix}lr_head.")]:
            del state_dict[key]

    def _interpolate(self, a: list[Tensor], b: list[Tensor]) -> Tensor:
        """F_2t = f(F_2t−1, F_2t+1) (Eq. 6.1-6.4)."""
        return self.fusion(self.pcd_align(a, b))

    def _reconstruct(self, feats: Tensor) -> Tensor:
        b, t, c, h, w = feats.shape
        x = self.recon_trunk(feats.reshape(b * t, c, h, w))
        x = self.lrelu(self.pixel_shuffle(self.upconv1(x)))
        x = self.lrelu(self.pixel_shuffle(self.upconv2(x)))
        x = self.conv_last(self.lrelu(self.HRconv(x)))
        return x.view(b, t, 3, 4 * h, 4 * w)

    def forward(self, x: Tensor, return_aux: bool = False) -> Tensor | dict[str, Tensor]:
        """``x``: B×N×3×H×W in [0, 1], N ≥ 2, any H, W (zero-padded to a multiple of 4 and cropped back).

        Returns B×(2N−1)×3×4H×4W, or with ``return_aux`` a dict with ``out`` and, when the GFI head exists,
        ``lr_interp1`` (ρ of the N−1 interpolated features, Eq. 6.8) and ``lr_interp2`` (ρ of the N−2
        re-interpolated ones, Eq. 6.9).
        """
        if x.ndim != 5 or x.shape[2] != 3 or x.shape[1] < 2:
            raise ValueError(f"ZSM expects B×N×3×H×W with N ≥ 2, got {tuple(x.shape)}")
        b, n, _, h, w = x.shape
        skip = self.skip(x) if self.skip is not None else None
        ph, pw = (-h) % 4, (-w) % 4
        if ph or pw:
            x = F.pad(x.view(b * n, 3, h, w), (0, pw, 0, ph)).view(b, n, 3, h + ph, w + pw)
        hp, wp = x.shape[-2:]
        l1 = self.feature_extraction(self.lrelu(self.conv_first(x.reshape(b * n, 3, hp, wp))))
        pyr = [p.view(b, n, *p.shape[1:]) for p in self.pyramid(l1)]
        level = lambda i: [p[:, i] for p in pyr]  # noqa: E731
        feats, interp = [], []
        for i in range(n - 1):
            mid = self._interpolate(level(i), level(i + 1))
            feats += [pyr[0][:, i], mid]
            interp.append(mid)
        feats.append(pyr[0][:, n - 1])
        seq = stack_frames(feats)
        if self.temporal is not None:
            seq = self.temporal(seq)
        out = self._reconstruct(seq)[..., : 4 * h, : 4 * w]
        if skip is not None:
            out = out + skip
        if not return_aux:
            return out
        aux = {"out": out}
        if self.lr_head is not None:
            aux["lr_interp1"] = self._lr(torch.stack(interp, 1))[..., :h, :w]
            if n >= 3:
                ipyr = [self.pyramid(f) for f in interp]
                second = [self._interpolate(ipyr[i], ipyr[i + 1]) for i in range(n - 2)]
                aux["lr_interp2"] = self._lr(torch.stack(second, 1))[..., :h, :w]
        return aux

    def _lr(self, feats: Tensor) -> Tensor:
        """ρ: LR synthesis from features (GFI, Sec. 6.3.5)."""
        b, t, c, h, w = feats.shape
        return self.lr_head(feats.reshape(b * t, c, h, w)).view(b, t, 3, h, w)


class BicubicBlend(nn.Module):
    """Two-stage baseline without learning: frame blending (the average of the two neighbours) for the missing
    frames, then bicubic ×4 of every frame (the 'Bicubic' rows of Tables 6.1-6.2, with a trivial VFI)."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor, return_aux: bool = False) -> Tensor | dict[str, Tensor]:
        if x.ndim != 5 or x.shape[1] < 2:
            raise ValueError(f"expects B×N×3×H×W with N ≥ 2, got {tuple(x.shape)}")
        b, n, c, h, w = x.shape
        frames = []
        for i in range(n - 1):
            frames += [x[:, i], (x[:, i] + x[:, i + 1]) / 2]
        frames.append(x[:, -1])
        seq = torch.stack(frames, 1).reshape(b * (2 * n - 1), c, h, w)
        up = F.interpolate(seq, scale_factor=self.scale, mode="bicubic", align_corners=False)
        out = up.view(b, 2 * n - 1, c, h * self.scale, w * self.scale)
        return {"out": out} if return_aux else out
