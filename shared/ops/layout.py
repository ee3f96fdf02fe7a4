"""Memory-layout helpers for channels_last inference (Ch. 4–6 networks on CPU): every conv of a network converted
with ``net.to(memory_format=torch.channels_last)`` then reads and writes NHWC memory; these keep the few places
that stack frames or build states from falling back to NCHW (which would make the next conv reorder its input)."""

from __future__ import annotations

import torch
from torch import Tensor


def is_channels_last(x: Tensor) -> bool:
    """NHWC memory (a 4-D tensor, or a 5-D B×T×C×H×W whose frames are NHWC) that is not also plain contiguous."""
    if x.dim() == 5:
        return x.shape[2] > 1 and x.stride(2) == 1 and not x.is_contiguous()
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def stack_frames(frames: list[Tensor]) -> Tensor:
    """``torch.stack(frames, 1)`` for B×C×H×W frames; NHWC frames give a B×T×C×H×W tensor laid out B,T,H,W,C, so
    ``reshape(B·T, C, H, W)`` is a free NHWC view (plain ``stack`` would interleave T into every pixel)."""
    if all(is_channels_last(f) for f in frames):
        return torch.stack([f.permute(0, 2, 3, 1) for f in frames], dim=1).permute(0, 1, 4, 2, 3)
    return torch.stack(frames, dim=1)


def cat_channels(tensors: list[Tensor]) -> Tensor:
    """Concatenate B×T×C×H×W tensors along C, keeping frames NHWC when they are."""
    if all(is_channels_last(t) for t in tensors):
        return torch.cat([t.permute(0, 1, 3, 4, 2) for t in tensors], dim=-1).permute(0, 1, 4, 2, 3)
    return torch.cat(tensors, dim=2)


def zeros_like_layout(ref: Tensor, *shape: int) -> Tensor:
    """Zeros of ``shape`` (B×C×H×W) in ``ref``'s memory layout, dtype and device."""
    out = ref.new_zeros(*shape)
    return out.contiguous(memory_format=torch.channels_last) if is_channels_last(ref) else out


def as_layout_of(x: Tensor, weight: Tensor) -> Tensor:
    """``x`` in channels_last when ``weight`` (a conv's) is — for the input of a network's first conv when the tensor
    that reaches it has one channel or comes from an op that writes NCHW (pixel_unshuffle of a 1-channel map)."""
    if weight.dim() == 4 and is_channels_last(weight):
        return x.contiguous(memory_format=torch.channels_last)
    return x
