"""Deformable convolution (DCNv1/DCNv2) as bilinear gathers feeding one matmul.

Used by the deformable feature interpolation and deformable ConvLSTM of Chapter 6 (Eq. 6.2-6.3, 6.5) and by the
reference feature alignment of Chapter 5 (Eq. 5.3-5.4).

``deform_conv2d`` is a drop-in for :func:`torchvision.ops.deform_conv2d`: same signature, same offset layout
(per offset group a contiguous block of ``2*kh*kw`` channels, ``(dy, dx)`` per tap, taps row-major) and mask layout
(``offset_groups*kh*kw`` channels), same zero-padded bilinear sampling rule. The native backend samples every tap
with one :func:`torch.nn.functional.grid_sample` call (vectorised CPU / CUDA kernels with their own backward), scales
by the mask and contracts with the weight in one batched matmul. Autograd provides the backward pass.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision.ops
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

Backend = Literal["auto", "native", "torchvision"]
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_CHUNK_BYTES = 8 << 20
_DEFAULT_BACKEND: Backend = os.environ.get("DCN_BACKEND", "auto")  # type: ignore[assignment]


def set_default_backend(backend: Backend) -> None:
    """Choose the backend used when ``backend="auto"`` is not overridden per call."""
    global _DEFAULT_BACKEND
    if backend not in ("auto", "native", "torchvision"):
        raise ValueError(f"unknown deform_conv2d backend {backend!r}")
    _DEFAULT_BACKEND = backend


def _resolve_backend(backend: Backend | None, x: Tensor) -> str:
    backend = backend or _DEFAULT_BACKEND
    if backend == "auto":
        # torchvision has no bf16 kernel; on CPU the native path is several times faster (docs/benchmarks.md).
        if x.is_cuda and x.dtype != torch.bfloat16:
            return "torchvision"
        return "native"
    return backend


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = (1, 1),
    padding: int | tuple[int, int] = (0, 0),
    dilation: int | tuple[int, int] = (1, 1),
    mask: Tensor | None = None,
    *,
    backend: Backend | None = None,
) -> Tensor:
    """Modulated (``mask`` given, DCNv2) or plain (DCNv1) deformable convolution.

    Shapes follow torchvision: ``input`` B×Cin×H×W, ``offset`` B×(2·G·kh·kw)×Ho×Wo, ``weight``
    Cout×(Cin/groups)×kh×kw, ``mask`` B×(G·kh·kw)×Ho×Wo, where G (offset groups) is read from ``offset`` and
    ``groups`` from ``weight``.
    """
    if _resolve_backend(backend, input) == "torchvision":
        return torchvision.ops.deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)
    return _deform_conv2d_native(input, offset, weight, bias, _pair(stride), _pair(padding), _pair(dilation), mask)


def _deform_conv2d_native(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: Tensor | None,
) -> Tensor:
    b, cin, h, w = x.shape
    cout, cin_per_group, kh, kw = weight.shape
    k = kh * kw
    if cin % cin_per_group:
        raise ValueError(f"input channels {cin} not divisible by weight's in-channels {cin_per_group}")
    groups = cin // cin_per_group
    if offset.shape[1] % (2 * k):
        raise ValueError(f"offset channels {offset.shape[1]} are not a multiple of 2*kh*kw={2 * k}")
    g = offset.shape[1] // (2 * k)
    if cin % g:
        raise ValueError(f"input channels {cin} not divisible by offset groups {g}")
    ho = (h + 2 * padding[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    wo = (w + 2 * padding[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    if offset.shape[-2:] != (ho, wo):
        raise ValueError(f"offset spatial size {tuple(offset.shape[-2:])} != output size {(ho, wo)}")
    if mask is not None and mask.shape[1] != g * k:
        raise ValueError(f"mask channels {mask.shape[1]} != offset groups * kh * kw = {g * k}")

    out_dtype = x.dtype
    # channels_last in → channels_last out: the contraction is written as (positions × taps·Cin) @ (taps·Cin × Cout),
    # whose result is NHWC memory, returned as an NCHW view — the next layer gets the layout it runs fastest in.
    nhwc = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    # Sampling positions need fp32 precision (a 16-bit coordinate cannot address a pixel of a large map exactly).
    work = torch.float32 if out_dtype in _LOW_PRECISION else out_dtype
    xs = x.to(work)
    xs = xs.view(b * g, cin // g, h, w) if g == 1 else xs.reshape(b * g, cin // g, h, w)
    off = offset.to(work).reshape(b, g, k, 2, ho, wo)
    msk = mask.to(work).reshape(b, g, 1, k, ho, wo) if mask is not None else None
    wmat = weight.to(work).reshape(groups, cout // groups, cin_per_group * k)

    base, scale = _base_grid(h, w, ho, wo, kh, kw, stride, padding, dilation, x.device, work)  # (k, ho, wo, 2)
    # Output rows are processed in chunks whose sampled columns stay a few MB: the temporaries stay in cache and
    # below the allocator's mmap threshold, which is worth more than 3x on CPU (docs/benchmarks.md).
    bytes_per_row = b * cin * k * wo * torch.finfo(work).bits // 8
    rows = max(1, min(ho, _CHUNK_BYTES // max(bytes_per_row, 1))) if not x.is_cuda else ho
    outs = []
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        n = r1 - r0
        o = off[..., r0:r1, :]  # (b, g, k, 2, n, wo) as (dy, dx)
        # normalised sampling grid (x, y): base tap position + offset · 2/size
        grid = torch.addcmul(base[:, r0:r1], torch.stack((o[:, :, :, 1], o[:, :, :, 0]), dim=-1), scale)
        grid = grid.view(b * g, k * n, wo, 2)
        cols = F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        cols = cols.view(b, g, cin // g, k, n, wo)
        if msk is not None:
            m = msk[..., r0:r1, :]
            needs_grad = torch.is_grad_enabled() and (cols.requires_grad or m.requires_grad)
            cols = cols * m if needs_grad else cols.mul_(m)  # in place when no graph needs the unmasked columns
        cols = cols.reshape(b, groups, cin_per_group * k, n * wo)
        if nhwc:  # (b, groups, n·wo, cout/groups) → NHWC rows r0:r1
            part = torch.matmul(cols.transpose(-1, -2), wmat.transpose(-1, -2))
            outs.append(part.permute(0, 2, 1, 3).reshape(b, n, wo, cout))
        else:
            outs.append(torch.matmul(wmat, cols).view(b, cout, n, wo))
    if nhwc:
        out = (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)).permute(0, 3, 1, 2)  # NCHW view of NHWC
    else:
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    if bias is not None:
        out = out + bias.to(work).view(1, cout, 1, 1)
    return out.to(out_dtype)


@lru_cache(maxsize=128)
def _base_grid(h: int, w: int, ho: int, wo: int, kh: int, kw: int, stride: tuple[int, int],
               padding: tuple[int, int], dilation: tuple[int, int], device: torch.device,
               dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Undeformed tap positions in grid_sample's normalised coordinates (align_corners=False maps u to pixel
    (u + 1)·size/2 − 0.5, and its zero padding makes a corner outside the map contribute 0 — torchvision's DCN rule).
    Shape (kh·kw, ho, wo, 2) with the last dim (x, y); also the (2/w, 2/h) factor that maps pixel offsets to it."""
    ky = torch.arange(kh, dtype=torch.float64).repeat_interleave(kw) * dilation[0]
    kx = torch.arange(kw, dtype=torch.float64).repeat(kh) * dilation[1]
    oy = torch.arange(ho, dtype=torch.float64) * stride[0] - padding[0]
    ox = torch.arange(wo, dtype=torch.float64) * stride[1] - padding[1]
    py = ky.view(-1, 1, 1) + oy.view(1, -1, 1)
    px = kx.view(-1, 1, 1) + ox.view(1, 1, -1)
    gx = ((2 * px + 1) / w - 1).expand(-1, ho, wo)
    gy = ((2 * py + 1) / h - 1).expand(-1, ho, wo)
    base = torch.stack((gx, gy), dim=-1).to(device=device, dtype=dtype)
    return base, torch.tensor([2.0 / w, 2.0 / h], device=device, dtype=dtype)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 whose offsets and mask are predicted from a separate conditioning tensor (Eq. 6.2-6.3).

    Parameter names follow the official Zooming-Slow-Mo ``DCN_sep`` so its checkpoints load unchanged: ``weight``,
    ``bias`` and ``conv_offset_mask`` (a conv from ``cond_channels`` to ``3·G·kh·kw`` channels, zero-initialised so
    the layer starts as a plain conv scaled by 0.5). The conv_offset_mask output splits into three equal chunks:
    the first two (in order) are the offsets, the third passes through a sigmoid and becomes the mask.

    ``max_offset`` clamps offsets to ±max_offset pixels (no host sync). ``offset_abs_mean`` holds the mean |offset|
    of the last call as a detached tensor; :class:`shared.callbacks.OffsetMonitor` reads it every N steps, so the
    forward pass never syncs the device.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        deformable_groups: int = 8,
        cond_channels: int | None = None,
        bias: bool = True,
        max_offset: float | None = None,
        backend: Backend | None = None,
    ) -> None:
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.deformable_groups = deformable_groups
        self.max_offset = max_offset
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.conv_offset_mask = nn.Conv2d(
            cond_channels or in_channels,
            3 * deformable_groups * kh * kw,
            (kh, kw),
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
        )
        self.register_buffer("offset_abs_mean", torch.zeros(()), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        om = self.conv_offset_mask(cond)
        n_off = om.shape[1] * 2 // 3  # chunks 1 and 2 (in order) are the offsets, chunk 3 the mask logits
        offset, m = om[:, :n_off], om[:, n_off:]
        if self.max_offset is not None:
            offset = offset.clamp(-self.max_offset, self.max_offset)
        if self.training:  # read by OffsetMonitor; a detached device tensor, no host sync
            self.offset_abs_mean = offset.detach().abs().mean()
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, torch.sigmoid(m),
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return (f"{i}, {o}, kernel=({kh}, {kw}), deformable_groups={self.deformable_groups}, "
                f"max_offset={self.max_offset}")
