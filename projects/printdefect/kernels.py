"""Compiled CPU kernels for page-scale work (numba, ``nogil``): PNG row unfiltering and the block statistics of
Eq. 1.1–1.6. Each kernel handles a range of rows so that callers split a page over threads (:func:`run_split`);
the GIL is released inside, so the threads run in parallel. Compiled on first use and cached beside this file.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit


def run_split(fn, n: int, *args, threads: int | None = None) -> None:
    """Call ``fn(*args, start, stop)`` on ``threads`` (default: torch's thread count) contiguous parts of
    ``range(n)``, in parallel."""
    threads = max(1, min(n, threads or torch.get_num_threads()))
    if threads == 1:
        fn(*args, 0, n)
        return
    bounds = np.linspace(0, n, threads + 1).round().astype(int)
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(fn, *args, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]:
            f.result()


# ------------------------------------------------------------------------------------------------------- PNG


@njit(nogil=True, cache=True, inline="always")
def _paeth(a, b, c):
    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


@njit(nogil=True, cache=True)
def png_rows(raw, width, bpp, start, stop, rgb, mask):
    """Undo the PNG row filters (None, Sub, Up, Average, Paeth) of 8-bit non-interlaced scanlines ``start:stop``
    in place in ``raw`` (the inflated IDAT stream: each row is a filter-type byte and ``width·bpp`` samples; row
    ``start − 1`` must already be undone) and write them out: ``rgb`` (H×W×3; gray is repeated) and, for gray+alpha
    / RGBA, ``mask`` = alpha > 127. Returns the first row with an unknown filter type, else −1."""
    stride = width * bpp
    line = stride + 1
    for y in range(start, stop):
        f = raw[y * line]
        cur = raw[y * line + 1:(y + 1) * line]
        if y > 0:
            up = raw[(y - 1) * line + 1:y * line]
        else:
            up = np.zeros(stride, np.uint8)
        if f == 1:
            for x in range(bpp, stride):
                cur[x] = cur[x] + cur[x - bpp]
        elif f == 2:
            for x in range(stride):
                cur[x] = cur[x] + up[x]
        elif f == 3:
            for x in range(bpp):
                cur[x] = cur[x] + (up[x] >> 1)
            for x in range(bpp, stride):
                cur[x] = cur[x] + np.uint8((np.int32(cur[x - bpp]) + np.int32(up[x])) >> 1)
        elif f == 4:
            for x in range(bpp):
                cur[x] = cur[x] + up[x]
            for x in range(bpp, stride):
                cur[x] = cur[x] + np.uint8(_paeth(np.int32(cur[x - bpp]), np.int32(up[x]), np.int32(up[x - bpp])))
        elif f != 0:
            return y
        for x in range(width):
            i = x * bpp
            if bpp >= 3:
                rgb[y, x, 0] = cur[i]
                rgb[y, x, 1] = cur[i + 1]
                rgb[y, x, 2] = cur[i + 2]
            else:
                rgb[y, x, 0] = cur[i]
                rgb[y, x, 1] = cur[i]
                rgb[y, x, 2] = cur[i]
            if bpp == 2 or bpp == 4:
                mask[y, x] = cur[i + bpp - 1] > 127
    return -1


# ------------------------------------------------------------------------------------------- block statistics


@njit(nogil=True, cache=True)
def block_stats_rows(lab, mask, block, offset, out, start, stop):
    """Eq. 1.1–1.6 for block rows ``start:stop`` of the grid at ``offset``: ``out[r, c]`` = (mean L*, a*, b*, MDE,
    DDE, MDL, DDL, PDE, n_valid) over the block's unmasked pixels (std with n − 1; PDE = the peak ΔE_ij of Eq. 1.1;
    NaN-free: empty blocks give n = 0).

    Two passes over each block's pixels while they are in cache: the mean L*a*b*, then ΔE = ‖Lab − mean‖ and
    ΔL = |L* − mean L*| with their sums and sums of squares (float64).
    """
    cols = out.shape[1]
    for r in range(start, stop):
        y0 = offset + r * block
        for c in range(cols):
            x0 = offset + c * block
            n = 0
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            for y in range(y0, y0 + block):
                for x in range(x0, x0 + block):
                    if mask[y, x]:
                        n += 1
                        s0 += lab[y, x, 0]
                        s1 += lab[y, x, 1]
                        s2 += lab[y, x, 2]
            nn = max(n, 1)
            m0 = np.float32(s0 / nn)
            m1 = np.float32(s1 / nn)
            m2 = np.float32(s2 / nn)
            e1 = 0.0
            e2 = 0.0
            l1 = 0.0
            l2 = 0.0
            pk = 0.0
            for y in range(y0, y0 + block):
                for x in range(x0, x0 + block):
                    if mask[y, x]:
                        d0 = lab[y, x, 0] - m0
                        d1 = lab[y, x, 1] - m1
                        d2 = lab[y, x, 2] - m2
                        de = math.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
                        dl = abs(d0)
                        e1 += de
                        e2 += de * de
                        l1 += dl
                        l2 += dl * dl
                        if de > pk:
                            pk = de
            dn = max(n - 1, 1)
            mde = e1 / nn
            mdl = l1 / nn
            out[r, c, 0] = s0 / nn
            out[r, c, 1] = s1 / nn
            out[r, c, 2] = s2 / nn
            out[r, c, 3] = mde
            out[r, c, 4] = math.sqrt(max(e2 - n * mde * mde, 0.0) / dn)
            out[r, c, 5] = mdl
            out[r, c, 6] = math.sqrt(max(l2 - n * mdl * mdl, 0.0) / dn)
            out[r, c, 7] = pk
            out[r, c, 8] = n


# ------------------------------------------------------------------------------------------- defect masks


@njit(nogil=True, cache=True)
def _component(s, m, i, pol, py, px, half, lab, stack):
    """8-connected pixels of block ``i`` around (py, px) with pol·s ≥ half (and unmasked): marks ``lab`` and
    returns (size, Σ pol·s)."""
    b = s.shape[1]
    lab[:, :] = False
    top = 0
    stack[0] = py * b + px
    top = 1
    lab[py, px] = True
    size = 0
    vol = 0.0
    while top > 0:
        top -= 1
        p = stack[top]
        y, x = p // b, p % b
        size += 1
        vol += pol * s[i, y, x]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if 0 <= yy < b and 0 <= xx < b and not lab[yy, xx] and m[i, yy, xx] and pol * s[i, yy, xx] >= half:
                    lab[yy, xx] = True
                    stack[top] = yy * b + xx
                    top += 1
    return size, vol


@njit(nogil=True, cache=True)
def fwhm_masks(s, m, out, info, start, stop):
    """Defect mask of each block ``start:stop`` (FWHM, cf. Fig. 1.8): the 8-connected pixels around the peak of the
    signed contrast ``s`` (+ΔE where lighter than the background, −ΔE where darker) that reach half the peak — for
    the lighter and for the darker peak; the one with the larger volume Σ|s| is the defect. ``out``: N×B×B bool;
    ``info[i]`` = (light 1/0, peak, volume, size)."""
    b = s.shape[1]
    stack = np.empty(b * b, np.int64)
    lab_l = np.zeros((b, b), np.bool_)
    lab_d = np.zeros((b, b), np.bool_)
    for i in range(start, stop):
        best = (0.0, 0.0, 0.0, 0.0)
        best_pol = 0
        for pol in (1.0, -1.0):
            pk = 0.0
            py = -1
            px = -1
            for y in range(b):
                for x in range(b):
                    if m[i, y, x] and pol * s[i, y, x] > pk:
                        pk = pol * s[i, y, x]
                        py = y
                        px = x
            if py < 0:
                continue
            lab = lab_l if pol > 0 else lab_d
            size, vol = _component(s, m, i, pol, py, px, pk / 2.0, lab, stack)
            if vol > best[2]:
                best = (1.0 if pol > 0 else 0.0, pk, vol, float(size))
                best_pol = 1 if pol > 0 else -1
        for y in range(b):
            for x in range(b):
                out[i, y, x] = (lab_l[y, x] if best_pol == 1 else lab_d[y, x]) if best_pol != 0 else False
        info[i, 0], info[i, 1], info[i, 2], info[i, 3] = best
