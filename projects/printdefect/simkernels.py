"""Compiled kernels of the page simulator (numba, ``nogil``; rows split over threads with
:func:`projects.printdefect.kernels.run_split`): halftoning of constant or varying tints with AM / FM screens, and
the scanner's last stage (paper texture, illumination, sRGB encoding, noise, 8-bit quantisation).

Every random number here is a hash of (seed, pixel, channel), so a page does not depend on how its rows are split
over threads, and any window of it can be rendered again on its own (the simulator measures each defect's
visibility on a window rendered with and without it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

SHAPE_IDS = {"round": 0, "elliptical": 1, "line": 2, "fm": 3}
LUT_SIZE = 4096
RESET = 128            # the cos/sin recurrence restarts from exact values every RESET pixels


@njit(nogil=True, cache=True, inline="always")
def _spot(shape, cu, cv):
    """AM spot function in [0, 1] (0 at the dot centres, dots grow outwards)."""
    if shape == 0:
        return 0.5 - 0.25 * (cu + cv)
    if shape == 1:
        return 0.5 - 0.25 * (1.3 * cu + 0.7 * cv)
    return 0.5 - 0.5 * cu


@njit(nogil=True, cache=True, inline="always")
def _spot_grad(shape, su, sv):
    """|∇ spot| per radian of screen phase (times 2π/period: per pixel)."""
    if shape == 0:
        return 0.25 * math.sqrt(su * su + sv * sv)
    if shape == 1:
        return 0.25 * math.sqrt(1.69 * su * su + 0.49 * sv * sv)
    return 0.5 * abs(su)


@njit(nogil=True, cache=True, inline="always")
def _lut_slope(table, f):
    """Slope of the table at ``f``, over ±8 entries (robust to the histogram's steps)."""
    n = table.shape[0] - 1
    i = min(int(min(max(f, 0.0), 1.0) * n), n - 1)
    a, b = max(0, i - 8), min(n, i + 9)
    return (table[b] - table[a]) * n / (b - a)


@njit(nogil=True, cache=True, inline="always")
def _lut(table, f):
    """Piecewise-linear lookup of ``table`` (LUT_SIZE + 1 samples of [0, 1]) at ``f``."""
    n = table.shape[0] - 1
    p = min(max(f, 0.0), 1.0) * n
    i = min(int(p), n - 1)
    a = p - i
    return table[i] * (1.0 - a) + table[i + 1] * a


@njit(nogil=True, cache=True)
def halftone_rows(tint, cmyk, y0, x0, scr, luts, lin, tile, absorb, out, start, stop):
    """Transmittance Π_c (1 − dot_c · absorb[c]) of rows ``start:stop`` of a window at page position (x0, y0).

    ``tint``: 4×h×w colorant coverages of the window, or 4×0×0 to use the constant ``cmyk``; ``scr``: 4×8 screen
    parameters per colorant (active, shape id, period px (FM: device pixels per scan pixel), angle rad,
    phase u / FM offset x, phase v / FM offset y, dot gain, extra edge softness (AM: the dot edge is a linear
    ramp over (1 + softness) pixels)); ``luts``: 3×(LUT_SIZE+1) tone-correction tables of the AM spot functions
    (so the dot area equals the tint); ``lin``: 4×(n+1) tables tint → threshold level per colorant (the printer's
    tone linearisation and dot gain, see ``simulate._Renderer``); ``tile``: the FM threshold tile (device pixels);
    ``out``: h×w×3 float32.

    AM dots are evaluated analytically at each pixel centre with the pixel-integrated edge (a linear ramp across
    the dot edge: what a scanner pixel sees of a sharp dot); FM dots at the printer's resolution, averaged.
    """
    w = out.shape[1]
    use_tint = tint.shape[1] > 0
    tsz = tile.shape[0]
    for r in range(start, stop):
        for j in range(w):
            out[r, j, 0] = 1.0
            out[r, j, 1] = 1.0
            out[r, j, 2] = 1.0
        y = y0 + r + 0.5
        for c in range(4):
            if scr[c, 0] == 0.0:
                continue
            if not use_tint and cmyk[c] <= 0.0:
                continue
            shape = int(scr[c, 1])
            soft = scr[c, 7]
            a0, a1, a2 = absorb[c, 0], absorb[c, 1], absorb[c, 2]
            k = 2.0 * math.pi / scr[c, 2]
            ct, st = math.cos(scr[c, 3]), math.sin(scr[c, 3])
            du, dv = ct * k, -st * k
            ub = (y * st) * k + scr[c, 4]
            vb = (y * ct) * k + scr[c, 5]
            cdu, sdu, cdv, sdv = math.cos(du), math.sin(du), math.cos(dv), math.sin(dv)
            cu = su = cv = sv = 0.0
            ss = max(1, int(scr[c, 2])) if shape == 3 else 1
            fy = (int(math.floor(y)) * ss + int(scr[c, 5])) % tsz
            for j in range(w):
                if shape != 3 and j % RESET == 0:
                    xx = x0 + j + 0.5
                    u = xx * du + ub
                    v = xx * dv + vb
                    cu, su, cv, sv = math.cos(u), math.sin(u), math.cos(v), math.sin(v)
                t = tint[c, r, j] if use_tint else cmyk[c]
                if t > 0.0:
                    te = _lut(lin[c], t)
                    if shape == 3:   # FM at the printer's resolution: ss×ss device pixels per scan pixel
                        d = 0.0
                        fx = (x0 + j) * ss + int(scr[c, 4])
                        for sy in range(ss):
                            for sx in range(ss):
                                if te > tile[(fy + sy) % tsz, (fx + sx) % tsz]:
                                    d += 1.0
                        d /= ss * ss
                    else:   # the dot edge integrated over the pixel: a linear ramp across the edge
                        f = _spot(shape, cu, cv)
                        s = _lut(luts[shape], f)
                        g = _lut_slope(luts[shape], f) * _spot_grad(shape, su, sv) * k * (1.0 + soft)
                        if g > 1e-9:
                            d = min(max((te - s) / g + 0.5, 0.0), 1.0)
                        else:
                            d = 1.0 if te > s else 0.0
                    if d > 0.0:
                        out[r, j, 0] *= 1.0 - d * a0
                        out[r, j, 1] *= 1.0 - d * a1
                        out[r, j, 2] *= 1.0 - d * a2
                if shape != 3:
                    cu, su = cu * cdu - su * sdu, su * cdu + cu * sdu
                    cv, sv = cv * cdv - sv * sdv, sv * cdv + cv * sdv


@njit(nogil=True, cache=True, inline="always")
def _hash_uniform4(seed, y, x, ch):
    """Four independent uniforms in [0, 1) from a splitmix64 hash of (seed, y, x, ch)."""
    z = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(y) * np.uint64(0xBF58476D1CE4E5B9) \
        + np.uint64(x) * np.uint64(0x94D049BB133111EB) + np.uint64(ch) * np.uint64(0xD6E8FEB86659FD93)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    m = np.uint64(0xFFFF)
    return (float(z & m), float((z >> np.uint64(16)) & m), float((z >> np.uint64(32)) & m),
            float((z >> np.uint64(48)) & m))


@njit(nogil=True, cache=True, inline="always")
def hash_normal(seed, y, x, ch):
    """An approximately standard normal number (Irwin–Hall sum of four uniforms, variance scaled to 1)."""
    a, b, c, d = _hash_uniform4(seed, y, x, ch)
    return ((a + b + c + d) / 65536.0 - 2.0) * 1.7320508075688772


@njit(nogil=True, cache=True)
def scan_rows(refl, soft, amount, paper, illum, tex_lo, tex_step, tex_tile, gamma, noise, rho, seed, out, start, stop):
    """The scanner's last stage for rows ``start:stop``: unsharp masking ((1 + amount)·refl − amount·soft), then
    reflectance = transmittance · paper · texture ·
    illumination → sRGB (``gamma`` table) → ·255 + noise (8-bit levels; ``rho`` = the share of its variance common
    to the three channels) → rounded uint8 ``out``.

    ``illum`` = (amplitude, a, b, α, β, φ): 1 + amplitude·(a·(x/W − ½) + b·(y/H − ½) + ½·cos(2π(αx/W + βy/H) + φ))
    / 1.5; ``tex_lo``: a coarse texture field sampled every ``tex_step`` px (bilinear), ``tex_tile``: a fine
    texture tile (repeated); both are relative reflectance changes.
    """
    h, w = refl.shape[0], refl.shape[1]
    amp, ga, gb, al, be, ph = illum[0], illum[1], illum[2], illum[3], illum[4], illum[5]
    th = tex_tile.shape[0]
    lh, lw = tex_lo.shape[0], tex_lo.shape[1]
    s_own, s_common = math.sqrt(1.0 - rho), math.sqrt(rho)
    for r in range(start, stop):
        yf = r / h - 0.5
        ly = min(r / tex_step, lh - 1.000001)
        iy = int(ly)
        fy = ly - iy
        for j in range(w):
            xf = j / w - 0.5
            f = 1.0
            if amp != 0.0:
                f = 1.0 + amp * (ga * xf + gb * yf + 0.5 * math.cos(2 * math.pi * (al * j / w + be * r / h) + ph)) / 1.5
            lx = min(j / tex_step, lw - 1.000001)
            ix = int(lx)
            fx = lx - ix
            lo = (tex_lo[iy, ix] * (1 - fx) + tex_lo[iy, ix + 1] * fx) * (1 - fy) + \
                 (tex_lo[iy + 1, ix] * (1 - fx) + tex_lo[iy + 1, ix + 1] * fx) * fy
            f *= paper * (1.0 + lo + tex_tile[r % th, j % th])
            common = hash_normal(seed, r, j, 3) if rho > 0.0 else 0.0
            for ch in range(3):
                t = refl[r, j, ch]
                if amount > 0.0:
                    t = (1.0 + amount) * t - amount * soft[r, j, ch]
                v = _lut(gamma, t * f) * 255.0
                if noise > 0.0:
                    v += noise * (s_own * hash_normal(seed, r, j, ch) + s_common * common)
                v = math.floor(v + 0.5)
                out[r, j, ch] = np.uint8(min(max(v, 0.0), 255.0))


def tone_luts(size: int = LUT_SIZE, grid: int = 1024) -> np.ndarray:
    """Tone-correction tables of the three AM spot functions: the CDF of the spot value over one screen cell, so
    that ``lut(spot) < tint`` on a fraction ``tint`` of the cell (dot area = tint before dot gain)."""
    u = (np.arange(grid) + 0.5) * (2 * np.pi / grid)
    cu, cv = np.cos(u)[:, None], np.cos(u)[None, :]
    line = np.cos((np.arange(grid * grid) + 0.5) * (2 * np.pi / (grid * grid)))   # the line spot is 1-D
    out = np.empty((3, size + 1), np.float32)
    for shape in range(3):
        f = 0.5 - 0.5 * line if shape == 2 else \
            np.broadcast_to(_spot_np(shape, cu, cv), (grid, grid)).ravel()
        hist = np.histogram(f, bins=size, range=(0.0, 1.0))[0]
        out[shape] = np.r_[0.0, np.cumsum(hist) / f.size]
    return out


def _spot_np(shape: int, cu: np.ndarray, cv: np.ndarray) -> np.ndarray:
    if shape == 0:
        return 0.5 - 0.25 * (cu + cv)
    if shape == 1:
        return 0.5 - 0.25 * (1.3 * cu + 0.7 * cv)
    return 0.5 - 0.5 * cu + 0.0 * cv


def srgb_lut(size: int = LUT_SIZE) -> np.ndarray:
    """Linear reflectance in [0, 1] → sRGB-encoded value in [0, 1] (IEC 61966-2-1), LUT_SIZE + 1 samples."""
    x = np.linspace(0.0, 1.0, size + 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def fm_tile(rng: np.random.Generator, size: int = 256, dot: int = 1) -> np.ndarray:
    """A stochastic (FM) threshold tile with values uniform in [0, 1): white noise shaped to blue noise (its
    spectrum cut below a quarter of the dot frequency), ranked to uniform; the tile repeats seamlessly. ``dot`` > 1
    makes clustered dots of dot×dot pixels."""
    n = size // dot
    white = rng.standard_normal((n, n))
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    shaped = np.real(np.fft.ifft2(np.fft.fft2(white) * np.clip(f / 0.25, 0.0, 1.0) ** 2))
    ranks = np.empty(n * n, np.float32)
    ranks[np.argsort(shaped, axis=None, kind="stable")] = (np.arange(n * n) + 0.5) / (n * n)
    t = ranks.reshape(n, n)
    return np.ascontiguousarray(np.kron(t, np.ones((dot, dot), np.float32))) if dot > 1 else t
