"""Bounded-memory inference: run a network on overlapping tiles of the last two (spatial) dims and blend.

Tiles are processed one row of tiles (a *band*) at a time: only that band's HR rows are held in a float
accumulator; rows no later tile can touch are finished at once — divided by their blending weight and handed on
(kept as float, or quantised to the 8-bit image a user gets, on the CPU). The result equals blending the whole
frame at once (the same sums in the same order), and the float memory is one band instead of the whole HR frame.
Several tiles of a band can run as one batch (``batch``): fewer, larger calls.
"""

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


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of ``tile``-px tiles covering ``size`` px with at least ``overlap`` px shared between
    neighbours (the last one flush with the end)."""
    if tile >= size:
        return [0]
    if overlap >= tile:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile {tile}")
    step = tile - overlap
    return sorted({min(s, size - tile) for s in range(0, size, step)})


def tile_count(h: int, w: int, tile: int, overlap: int) -> int:
    """How many tiles of at most ``tile`` px cover an h×w input (what :func:`tiled_apply` runs per frame)."""
    return len(tile_starts(h, min(tile, h), overlap)) * len(tile_starts(w, min(tile, w), overlap))


def balanced_tile(size: int, tile: int, overlap: int, align: int = 4) -> int:
    """The smallest tile length (a multiple of ``align``, at most ``tile``) that covers ``size`` px with as few
    tiles as ``tile``-px ones need: a 640-px row needs three 320-px tiles at overlap 16, and three 224-px ones do
    the same job — 30 % fewer pixels through the network than 960 (the tiled path's main cost over whole frames)."""
    if tile >= size:
        return size
    n = len(tile_starts(size, tile, overlap))
    need = -(-(size - overlap) // n) + overlap
    return min(tile, -(-need // align) * align)


def to_uint8(x: Tensor) -> Tensor:
    """Values in [0, 1] → uint8 (clamped, rounded: what ``shared.io.tensor_to_image`` writes); one float temporary
    the size of ``x`` (``x`` itself is left alone)."""
    return x.float().clamp(0, 1).mul_(255).round_().to(torch.uint8)


def tiled_apply(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int | None, overlap: int, scale: int,
                sink: Callable[[int, Tensor], None], batch: int = 1) -> None:
    """``fn`` maps …×h×w to …×(scale·h)×(scale·w) (leading dims may grow, e.g. 4 input → 7 output frames); run it on LR
    tiles of at most ``tile`` px (:func:`balanced_tile`) overlapping by ``overlap`` px, ``batch`` tiles per call
    (stacked on dim 0), blend, and hand every finished block of HR rows to ``sink(first_row, rows)`` (float,
    …×rows×scale·w; a view into the band, reused afterwards: the sink copies what it keeps), top to bottom — only
    one band of rows is ever held in float. ``tile=None`` (or an input that fits) runs ``fn`` once."""
    h, w = x.shape[-2:]
    if not tile or (h <= tile and w <= tile):
        sink(0, fn(x).float())
        return
    th, tw = balanced_tile(h, tile, overlap), balanced_tile(w, tile, overlap)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    acc = wsum = None
    lo = 0  # first HR row held by the band accumulator
    hr_w = scale * w
    for bi, y0 in enumerate(ys):
        parts = []
        for i in range(0, len(xs), max(1, batch)):
            group = xs[i : i + max(1, batch)]
            res = fn(torch.cat([x[..., y0 : y0 + th, x0 : x0 + tw] for x0 in group], dim=0))
            n = res.shape[0] // len(group)
            parts += [(x0, res[j * n : (j + 1) * n]) for j, x0 in enumerate(group)]
        for x0, part in parts:
            part = part.float()
            ph, pw = part.shape[-2:]
            if acc is None:
                acc = part.new_zeros(*part.shape[:-2], scale * th, hr_w)
                wsum = part.new_zeros(scale * th, hr_w)
            wmap = (ramp(ph, scale * overlap, y0 > 0, y0 + th < h, part.device)[:, None]
                    * ramp(pw, scale * overlap, x0 > 0, x0 + tw < w, part.device)[None, :])
            r0 = scale * y0 - lo
            acc[..., r0 : r0 + ph, scale * x0 : scale * x0 + pw] += part * wmap
            wsum[r0 : r0 + ph, scale * x0 : scale * x0 + pw] += wmap
        # rows above the next band's first row get no more contributions: finished, normalised in place (the sink
        # gets a view: it must copy what it keeps)
        done = scale * (ys[bi + 1] if bi + 1 < len(ys) else h) - lo
        sink(lo, acc[..., :done, :].div_(wsum[:done]))
        shift_up(acc, done)
        shift_up(wsum, done)
        lo += done


def shift_up(band: Tensor, rows: int) -> None:
    """Move ``band``'s rows (dim −2) up by ``rows`` and zero the rows freed at the bottom, in place (no second
    band: a copy between disjoint rows when the rows kept fit above the ones dropped, else through a clone)."""
    keep = band.shape[-2] - rows
    if keep > 0:
        src = band[..., rows:, :]
        band[..., :keep, :].copy_(src if keep <= rows else src.clone())
    band[..., max(keep, 0):, :].zero_()


def into(out: Tensor, quantize: bool = False) -> Callable[[int, Tensor], None]:
    """A :func:`tiled_apply` sink writing rows into ``out`` (any device; uint8 values with ``quantize``)."""
    def write(row: int, rows: Tensor) -> None:
        out[..., row : row + rows.shape[-2], :] = to_uint8(rows) if quantize else rows
    return write


def tiled_forward(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int | None, overlap: int, scale: int,
                  batch: int = 1) -> Tensor:
    """:func:`tiled_apply` into one float tensor on ``x``'s device (evaluation, tests)."""
    h, w = x.shape[-2:]
    if not tile or (h <= tile and w <= tile):
        return fn(x)
    out = None

    def keep(row: int, rows: Tensor) -> None:
        nonlocal out
        if out is None:
            out = rows.new_empty(*rows.shape[:-2], scale * h, scale * w)
        out[..., row : row + rows.shape[-2], :] = rows

    tiled_apply(fn, x, tile, overlap, scale, keep, batch)
    return out
