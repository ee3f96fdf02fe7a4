"""Bounded-memory inference: run a network on overlapping tiles of the last two (spatial) dims and blend."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def ramp(n: int, width: int, ramp_start: bool, ramp_end: bool, device=None) -> Tensor:
    """1-D blending weights for a tile: at a side shared with a neighbouring tile (overlap ``width``), the outer
    third of the overlap is ignored (the tile's own border effects) and the middle third ramps linearly to 1."""
    w = torch.ones(n, device=device)
    if width <= 0:
        return w
    third = width / 3
    pos = torch.arange(n, device=device, dtype=torch.float32) + 0.5
    rise = ((pos - third) / third).clamp(0, 1)
    if ramp_start:
        w = torch.minimum(w, rise)
    if ramp_end:
        w = torch.minimum(w, rise.flip(0))
    return w


def tiled_forward(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int | None, overlap: int, scale: int) -> Tensor:
    """``fn`` maps …×h×w to …×(scale·h)×(scale·w); run it on ``tile``-px tiles overlapping by ``overlap`` px
    (input pixels) and blend. ``tile=None`` (or an input that fits) runs ``fn`` once."""
    h, w = x.shape[-2:]
    if not tile or (h <= tile and w <= tile):
        return fn(x)
    if overlap >= tile:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile {tile}")
    step = tile - overlap
    ys = sorted({min(y, max(h - tile, 0)) for y in range(0, h, step)})
    xs = sorted({min(x_, max(w - tile, 0)) for x_ in range(0, w, step)})
    out = weight = None
    for y0 in ys:
        for x0 in xs:
            part = fn(x[..., y0 : y0 + tile, x0 : x0 + tile]).float()
            th, tw = part.shape[-2:]
            wmap = (ramp(th, scale * overlap, y0 > 0, y0 + tile < h, part.device)[:, None]
                    * ramp(tw, scale * overlap, x0 > 0, x0 + tile < w, part.device)[None, :])
            if out is None:
                out = part.new_zeros(*part.shape[:-2], scale * h, scale * w)
                weight = part.new_zeros(scale * h, scale * w)
            out[..., scale * y0 : scale * y0 + th, scale * x0 : scale * x0 + tw] += part * wmap
            weight[scale * y0 : scale * y0 + th, scale * x0 : scale * x0 + tw] += wmap
    return out / weight
