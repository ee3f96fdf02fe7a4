"""HIME: headshot image super-resolution with any number of exemplars (Ch. 5, Fig. 5.2 / 5.8, Eq. 5.1–5.6).

Layout (the dissertation fixes k_l = 5, k_h = 3, k_r = 20 and the data flow; the width and the exact RFA/CoFA convs
are ours, chosen so that the parameter count and GMACs land on Table 5.1 — see ``projects/hime/README.md``):

* HR reference extractor: learned RGB → mono 1×1 conv (initialised to BT.601 luma) → space-to-depth(s) → conv3×3
  s²→nf → LReLU → k_h residual blocks  →  F_ref (LR grid).
* LR extractor (shared by the input and the downsampled references): conv3×3 3→nf → LReLU → k_l residual
  blocks  →  F_L, F_refL. The references are downsampled exactly as the LR input is made (MATLAB bicubic ×1/s,
  rounded to 8 bits like ``imwrite``; :func:`matlab_downsample`), so RFA compares like with like.
* RFA (Eq. 5.1–5.3): g = conv3×3 2nf→nf → LReLU → ``offset_blocks`` residual blocks → conv3×3 nf→nf → LReLU
  on [F_refL, F_L]; a DCNv2 (``deformable_groups`` groups) predicts its offsets/masks from g and samples F_ref.
  Table 5.2 switch ``alignment``: ``dconv_lr`` (b, the paper's), ``dconv_ref`` (c: g on [F_ref, F_L]),
  ``conv`` (a: the DCN replaced by a common 3×3 conv of the same kernel size on [F_ref, g([F_refL, F_L])] — the
  same offset network and inputs, no deformable sampling).
* CoFA (Eq. 5.4–5.6): μ_i = σ(g1(F_refA_i)ᵀ g2(F_L)) per pixel (g1, g2: conv3×3 nf→nf), F_a = Σ μ_i F_refA_i / Σ μ_i;
  Table 5.3 switch ``aggregation``: ``cofa`` | ``average`` | ``max``. n = 0 references gives F_a = 0.
* Reconstruction: F_f = F_a + F_L → k_r residual blocks → conv3×3 (+ F_f) → sub-pixel conv nf→3·s² with ICNR
  init (scaled by 0.1) + PixelShuffle(s) (``upsampler=single``; ``progressive`` = log2(s) ×2 stages + conv nf→3)
  → + bicubic(I_L) (MATLAB bicubic, the kernel of the data).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.imresize import imresize
from shared.ops.blocks import ResidualBlockNoBN, make_layer
from shared.ops.deform import ModulatedDeformConv2d
from shared.ops.layout import as_layout_of, is_channels_last, stack_frames
from shared.ops.upsample import PixelShuffleUpsampler, icnr_, space_to_depth

Alignment = Literal["dconv_lr", "dconv_ref", "conv"]
Aggregation = Literal["cofa", "average", "max"]
ALIGNMENTS = ("dconv_lr", "dconv_ref", "conv")
AGGREGATIONS = ("cofa", "average", "max")


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.1, inplace=True)


def matlab_downsample(x: Tensor, scale: int) -> Tensor:
    """…×H×W images in [0, 1] → MATLAB ``imresize(·, 1/scale, 'bicubic')`` rounded to 8 bits like ``imwrite`` —
    exactly how the data makes the LR input from its HR image (``shared.imresize``), so F_refL and F_L of Eq. 5.2
    come from one degradation. No gradient flows through the rounding (references are inputs)."""
    h, w = x.shape[-2:]
    y = imresize(x, (h // scale, w // scale))
    return (torch.floor(y.clamp(0, 1) * 255 + 0.5) / 255).to(x.dtype)


class MonoMap(nn.Module):
    """RGB → one learned mono-channel map (Fig. 5.3): a 1×1 conv initialised to BT.601 luma."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class HRExtractor(nn.Module):
    """HR reference features on the LR grid (Sec. 5.3.1): mono map → space-to-depth(s) → conv → k_h res blocks."""

    def __init__(self, scale: int, nf: int, blocks: int) -> None:
        super().__init__()
        self.scale = scale
        self.mono = MonoMap()
        self.conv_first = nn.Conv2d(scale * scale, nf, 3, 1, 1)
        self.act = _lrelu()
        self.body = make_layer(ResidualBlockNoBN, blocks, nf=nf)

    def forward(self, ref: Tensor) -> Tensor:
        s2d = as_layout_of(space_to_depth(self.mono(ref), self.scale), self.conv_first.weight)
        return self.body(self.act(self.conv_first(s2d)))


class LRExtractor(nn.Module):
    """LR features (Sec. 5.3.1): conv → k_l residual blocks; shared by the input and the downsampled references."""

    def __init__(self, nf: int, blocks: int) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.act = _lrelu()
        self.body = make_layer(ResidualBlockNoBN, blocks, nf=nf)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.act(self.conv_first(x)))


class RFA(nn.Module):
    """Reference feature alignment (Eq. 5.1–5.3): F_refA = DConv(F_ref, Δp), Δp = g([F_refL, F_L]).

    ``alignment`` (Table 5.2): ``dconv_lr`` offsets from the LR-space pair (the paper's), ``dconv_ref`` offsets from
    [F_ref, F_L] (across HR/LR spaces), ``conv`` "common convolution of the same kernel size" in place of the DCN:
    a 3×3 conv on [F_ref, g([F_refL, F_L])] — the offset network g and every input stay, only the deformable
    sampling (alignment) goes. Its size differs from (b) only by DCN vs conv: at nf = 32, 8 groups, 53,208 fewer
    parameters (5.9 % of the ×8 network), not the whole offset network.
    """

    def __init__(self, nf: int, deformable_groups: int = 8, offset_blocks: int = 0,
                 alignment: Alignment = "dconv_lr") -> None:
        super().__init__()
        if alignment not in ALIGNMENTS:
            raise ValueError(f"unknown alignment {alignment!r} ({' | '.join(ALIGNMENTS)})")
        self.alignment = alignment
        layers: list[nn.Module] = [nn.Conv2d(2 * nf, nf, 3, 1, 1), _lrelu()]
        layers += list(make_layer(ResidualBlockNoBN, offset_blocks, nf=nf))
        layers += [nn.Conv2d(nf, nf, 3, 1, 1), _lrelu()]
        self.offset_net = nn.Sequential(*layers)  # g(·) of Eq. 5.2
        if alignment == "conv":
            self.conv = nn.Conv2d(2 * nf, nf, 3, 1, 1)
        else:
            self.dcn = ModulatedDeformConv2d(nf, nf, 3, 1, 1, deformable_groups=deformable_groups, cond_channels=nf)

    def forward(self, f_ref: Tensor, f_ref_lr: Tensor, f_lr: Tensor) -> Tensor:
        guide = f_ref if self.alignment == "dconv_ref" else f_ref_lr
        g = self.offset_net(torch.cat([guide, f_lr], dim=1))
        if self.alignment == "conv":
            return self.conv(torch.cat([f_ref, g], dim=1))
        return self.dcn(f_ref, g)


class CoFA(nn.Module):
    """Content-conditioned feature aggregation (Eq. 5.4–5.6) over a set of n ≥ 0 aligned reference features.

    ``aggregation`` (Table 5.3): ``cofa`` (μ-weighted mean), ``average``, ``max`` (max-pool across the set).
    The result does not depend on the order of the set. n = 0 gives zeros.
    """

    def __init__(self, nf: int, aggregation: Aggregation = "cofa") -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r} ({' | '.join(AGGREGATIONS)})")
        self.aggregation = aggregation
        if aggregation == "cofa":
            self.g1 = nn.Conv2d(nf, nf, 3, 1, 1)
            self.g2 = nn.Conv2d(nf, nf, 3, 1, 1)

    def scores(self, f_refa: Tensor, f_lr: Tensor) -> Tensor:
        """Logits z_i = g1(F_refA_i)ᵀ g2(F_L) per pixel (μ_i = σ(z_i), Eq. 5.6): B×n×H×W for B×n×C×H×W refs."""
        b, n, c, h, w = f_refa.shape
        e1 = self.g1(f_refa.reshape(b * n, c, h, w)).view(b, n, c, h, w)
        e2 = self.g2(f_lr).unsqueeze(1)
        return (e1 * e2).sum(dim=2)

    def forward(self, f_refa: Tensor, f_lr: Tensor) -> Tensor:
        """f_refa: B×n×C×H×W, f_lr: B×C×H×W → F_a: B×C×H×W."""
        if f_refa.shape[1] == 0:
            return torch.zeros_like(f_lr)
        nhwc = is_channels_last(f_lr)  # reduce over n in B×n×H×W×C order: the result stays channels_last
        x = f_refa.permute(0, 1, 3, 4, 2) if nhwc else f_refa
        c_dim = -1 if nhwc else 2
        if self.aggregation == "average":
            y = x.mean(dim=1)
        elif self.aggregation == "max":
            y = x.amax(dim=1)
        else:
            # μ_i / Σ_j μ_j computed as a softmax of log σ(z): the same value, without underflow when every σ(z) → 0
            weights = torch.softmax(F.logsigmoid(self.scores(f_refa, f_lr)), dim=1)
            y = (x * weights.unsqueeze(c_dim)).sum(dim=1)
        return y.permute(0, 3, 1, 2) if nhwc else y


class HIME(nn.Module):
    """The HIME generator (Fig. 5.2): ``forward(lr, refs)`` with lr B×3×H×W and refs B×n×3×sH×sW (n ≥ 0, or None)
    → B×3×sH×sW. The defaults are the Table 5.1 layout (849,388 parameters at ×4). ``references=False`` builds the
    no-reference baseline of Table 5.4 (no HR extractor/RFA/CoFA)."""

    def __init__(self, scale: int = 4, nf: int = 32, lr_blocks: int = 5, hr_blocks: int = 3, rec_blocks: int = 20,
                 deformable_groups: int = 8, offset_blocks: int = 10, alignment: Alignment = "dconv_lr",
                 aggregation: Aggregation = "cofa", references: bool = True,
                 upsampler: Literal["single", "progressive"] = "single") -> None:
        super().__init__()
        if scale < 2 or scale & (scale - 1) or scale > 64:
            raise ValueError(f"HIME scale must be a power of two in 2..64, got {scale}")
        self.scale, self.references = scale, references
        self.lr_extractor = LRExtractor(nf, lr_blocks)
        if references:
            self.hr_extractor = HRExtractor(scale, nf, hr_blocks)
            self.rfa = RFA(nf, deformable_groups, offset_blocks, alignment)
            self.cofa = CoFA(nf, aggregation)
        self.rec_body = make_layer(ResidualBlockNoBN, rec_blocks, nf=nf)
        self.rec_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        if upsampler == "single":
            conv = nn.Conv2d(nf, 3 * scale * scale, 3, 1, 1)
            icnr_(conv.weight, scale)
            with torch.no_grad():  # ×0.1 like the residual blocks' init: the net starts close to its bicubic skip
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)
            self.upsample = nn.Sequential(conv, nn.PixelShuffle(scale))
        elif upsampler == "progressive":
            self.upsample = nn.Sequential(PixelShuffleUpsampler(nf, scale), nn.Conv2d(nf, 3, 3, 1, 1))
        else:
            raise ValueError(f"unknown upsampler {upsampler!r} (single | progressive)")

    def aggregate(self, f_lr: Tensor, refs: Tensor) -> Tensor:
        """F_a from HR references B×n×3×sH×sW (Sec. 5.3.1–5.3.3)."""
        b, n, c, hh, ww = refs.shape
        s = self.scale
        if hh != f_lr.shape[-2] * s or ww != f_lr.shape[-1] * s:
            raise ValueError(f"references must be {s}× the input ({f_lr.shape[-2] * s}×{f_lr.shape[-1] * s}), "
                             f"got {hh}×{ww}")
        flat = refs.reshape(b * n, c, hh, ww)
        f_ref = self.hr_extractor(flat)
        f_ref_lr = self.lr_extractor(matlab_downsample(flat, s))  # the degradation of the LR input
        f_lr_rep = stack_frames([f_lr] * n).reshape(b * n, *f_lr.shape[1:])  # repeat_interleave, layout kept
        f_refa = self.rfa(f_ref, f_ref_lr, f_lr_rep)
        return self.cofa(f_refa.view(b, n, *f_refa.shape[1:]), f_lr)

    def forward(self, lr: Tensor, refs: Tensor | None = None) -> Tensor:
        f_lr = self.lr_extractor(lr)
        if self.references and refs is not None and refs.shape[1] > 0:
            f_f = self.aggregate(f_lr, refs) + f_lr  # F_f = F_a + F_L
        else:
            f_f = f_lr
        feat = self.rec_conv(self.rec_body(f_f)) + f_f
        up = imresize(lr, (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale))  # MATLAB bicubic ↑s
        return up + self.upsample(feat)  # I_SR = I_L↑s + R(F_f)


class DiscriminatorBlock(nn.Module):
    """StyleGAN2 residual D block: conv3×3 → LReLU(0.2) → conv3×3 (÷2 by average pooling) → LReLU, plus a 1×1
    projection of the pooled input; the sum is scaled by 1/√2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.conv1(x))
        y = self.act(F.avg_pool2d(self.conv2(y), 2))
        return (y + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class ResidualDiscriminator(nn.Module):
    """StyleGAN2-style residual discriminator C(·) of Sec. 5.5.1 ("Discriminators"): fromRGB 1×1 conv → residual
    blocks halving the resolution down to 4×4 (channels doubling from ``nf`` up to ``max_nf``) → conv3×3 →
    flatten → linear → linear → one raw score per image (the logits fed to the relativistic average GAN)."""

    def __init__(self, image_size: int = 128, nf: int = 64, max_nf: int = 512, in_channels: int = 3) -> None:
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"discriminator image_size must be a power of two ≥ 8, got {image_size}")
        self.image_size = image_size
        self.from_rgb = nn.Sequential(nn.Conv2d(in_channels, nf, 1), nn.LeakyReLU(0.2))
        blocks, ch, size = [], nf, image_size
        while size > 4:
            nxt = min(ch * 2, max_nf)
            blocks.append(DiscriminatorBlock(ch, nxt))
            ch, size = nxt, size // 2
        self.blocks = nn.Sequential(*blocks)
        self.final_conv = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(nn.Linear(ch * 16, ch), nn.LeakyReLU(0.2), nn.Linear(ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return self.head(self.final_conv(self.blocks(self.from_rgb(x))).flatten(1)).squeeze(1)
