"""Simulated scanned test pages with local defects (Fig. 1.1: the chapter's spots are simulated too) — diverse
enough that a detector trained on one set of settings can be tested on another (issue 19).

A page (letter / A4 / any pixel size, any dpi) holds a grid of constant-tint regions. Each region's colour is a
CMYK coverage (the chapter's 12 colours, or random coverages 10–90 % with dark colours); each colorant is halftoned
with the page's screen — clustered-dot AM (round, elliptical or line dots; ruling in lpi, classic angles plus an
offset) or a stochastic FM screen — with dot gain and soft dot edges, and the dots combine by a subtractive ink
model. The scanner: paper white and paper texture, optical blur (and optional sharpening), a slight skew, uneven
illumination and noise, 8-bit sRGB. Fiducial marks, a barcode, the margins and the gaps between regions are
masked (alpha = 0). Defects are drawn into the tint before halftoning: gray spots (lighter, soft edges, sometimes a
dark core), pinholes (toner missing) and solid spots (darker) — irregular blobs from 0.01 to several mm² and from
invisible to strong — and as distractors stray black toner specks and missing-toner specks (too small to see)
and thin scratches. Each defect's
visibility is measured: its peak ΔE (descreened L*a*b*, the detector's Sec. 1.2.1 preprocessing) between a window
rendered with and without it; a gray spot / pinhole / solid spot is *visible* when the peak ΔE is ≥
``visible_delta_e`` (5) and its area ≥ ``visible_area_mm2`` (0.05 mm²).

Every setting is a value, a ``[lo, hi]`` range drawn per page, a list of choices (strings) or a list of ranges (one
is chosen, then drawn from); ``domain`` picks a preset of ranges (:data:`DOMAINS`) so training and test pages can
come from different settings. The settings drawn for a page are in its ground truth (``scan``).

    python -m projects.printdefect.simulate out=data/printdefect/train pages=15 size=a4 domain=a seed=0
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from projects.printdefect.kernels import run_split
from projects.printdefect.simkernels import (
    SHAPE_IDS,
    fm_tile,
    halftone_rows,
    scan_rows,
    srgb_lut,
    tone_luts,
)
from shared.io import atomic_write_text

# CMYK tints of the chapter-like palette (12 colours like the dissertation's blockwise dataset)
PALETTE: dict[str, tuple[float, float, float, float]] = {
    "cyan": (0.6, 0, 0, 0), "magenta": (0, 0.6, 0, 0), "yellow": (0, 0, 0.7, 0), "red": (0, 0.6, 0.6, 0),
    "green": (0.6, 0, 0.6, 0), "blue": (0.6, 0.6, 0, 0), "gray": (0, 0, 0, 0.4), "light-cyan": (0.3, 0, 0, 0),
    "light-magenta": (0, 0.3, 0, 0), "orange": (0, 0.4, 0.7, 0), "violet": (0.35, 0.55, 0, 0),
    "dark-gray": (0, 0, 0, 0.65),
}
# fraction of red, green, blue light each colorant absorbs at full coverage
ABSORB = np.array([[0.80, 0.25, 0.05], [0.10, 0.80, 0.30], [0.02, 0.10, 0.85], [0.90, 0.90, 0.90]], np.float32)
SCREEN_DEG = (15.0, 75.0, 0.0, 45.0)
FM_DEVICE_DPI = 1200.0
LIN_SIZE = 256                         # entries of the tone-linearisation tables
PAGE_INCHES = {"letter": (8.5, 11.0), "a4": (8.27, 11.69)}
VISIBLE = ("gray_spot", "pinhole", "solid_spot")
DISTRACTORS = ("speck", "scratch")
LIGHT = ("gray_spot", "pinhole", "speck_light", "scratch")

Spec = Any   # a value, [lo, hi], a list of choices, or a list of [lo, hi] ranges

# Presets of ranges. "a" and "b" share no screen ruling, dot shape, scanner blur or noise level: train on one,
# test on the other (the held-out-domain protocol, README). "wide" spans both (the recipe for real use);
# "classic" is the simulator before issue 19 (one screen, one scanner), kept for comparison.
DOMAINS: dict[str, dict[str, Spec]] = {
    "a": dict(screen=["round", "elliptical"], lpi=[133.0, 175.0], angle_offset_deg=[-7.5, 7.5], dot_gain=[0.0, 0.08],
              dot_softness=[0.0, 0.5], colors="palette", blur_sigma_px600=[0.8, 1.2], sharpen=0.0,
              noise=[0.8, 2.0], noise_rho=[0.0, 0.3], illumination=[0.0, 0.04], skew_deg=[-0.2, 0.2],
              paper=[0.92, 0.95], paper_texture=[0.0, 0.008], ink_jitter=0.05),
    "b": dict(screen=["line", "fm", "round"], lpi=[[100.0, 125.0], [180.0, 200.0]], angle_offset_deg=[-22.5, 22.5],
              dot_gain=[0.08, 0.2], dot_softness=[0.5, 1.0], colors="random", coverage=[0.1, 0.9],
              dark_prob=0.3, blur_sigma_px600=[1.25, 1.8], sharpen=[0.0, 0.6], noise=[2.0, 3.5],
              noise_rho=[0.3, 0.7], illumination=[0.04, 0.08], skew_deg=[[-0.6, -0.25], [0.25, 0.6]],
              paper=[0.86, 0.97], paper_texture=[0.008, 0.02], ink_jitter=0.12),
    "wide": dict(screen=["round", "elliptical", "line", "fm"], lpi=[100.0, 200.0], angle_offset_deg=[-22.5, 22.5],
                 dot_gain=[0.0, 0.2], dot_softness=[0.0, 1.0], colors="mixed", coverage=[0.1, 0.9], dark_prob=0.25,
                 blur_sigma_px600=[0.7, 1.8], sharpen=[[0.0, 0.0], [0.0, 0.6]], noise=[0.5, 3.5],
                 noise_rho=[0.0, 0.7], illumination=[0.0, 0.08], skew_deg=[-0.6, 0.6], paper=[0.86, 0.97],
                 paper_texture=[0.0, 0.02], ink_jitter=0.12),
    "classic": dict(screen="round", lpi=150.0, angle_offset_deg=0.0, dot_gain=0.0, dot_softness=0.0,
                    colors="palette", blur_sigma_px600=1.0, sharpen=0.0, noise=1.5, noise_rho=0.0,
                    illumination=0.03, skew_deg=0.0, paper=0.94, paper_texture=0.0, ink_jitter=0.0),
}


@dataclass
class SimConfig:
    """Sizes in mm (converted with ``dpi``); ``size`` = 'letter', 'a4' or [width_px, height_px]. Settings marked
    *Spec* take a value, a ``[lo, hi]`` range (drawn per page), a list of choices or a list of ranges."""

    dpi: float = 600.0
    size: str | list[int] = "letter"
    domain: str | None = None                # preset of the Spec settings below (DOMAINS); explicit values win
    grid: list[int] = field(default_factory=lambda: [3, 2])          # region rows, cols
    margin_mm: float = 12.0
    gap_mm: float = 4.0
    inset_mm: float = 1.0                                             # masked band inside each region's edge
    barcode_mm: float = 8.0
    fiducial_mm: float = 4.0
    # colours: "palette" (the 12 named colours), "random" (coverage per colorant, dark colours with dark_prob),
    # "mixed" (either, per region), or a list of palette names / "c40m0y70k0" strings
    colors: str | list[str] = "palette"
    coverage: Spec = field(default_factory=lambda: [0.1, 0.9])
    dark_prob: float = 0.25
    # halftone (Spec)
    screen: Spec = "round"                                            # round | elliptical | line | fm
    lpi: Spec = 150.0
    angle_offset_deg: Spec = 0.0
    dot_gain: Spec = 0.0                                              # coverage gain at 50 % tint
    dot_softness: Spec = 0.0                                          # extra dot-edge blur (px) over the pixel's own
    fm_dot: Spec = 1                                                  # FM dot size in printer pixels (1200 dpi)
    ink_jitter: Spec = 0.0                                            # ± relative change of the ink absorptions
    # scanner (Spec)
    blur_sigma_px600: Spec = 1.0
    sharpen: Spec = 0.0                                               # unsharp-mask amount
    noise: Spec = 1.5                                                 # 8-bit levels (std)
    noise_rho: Spec = 0.0                                             # share of the noise common to R, G, B
    illumination: Spec = 0.03                                         # ± uneven illumination
    skew_deg: Spec = 0.0
    paper: Spec = 0.94
    paper_texture: Spec = 0.0                                         # relative std of the paper reflectance
    # defects: count per type; areas in mm² (log-uniform), depth = fraction of toner removed / added
    defects: dict[str, int] = field(default_factory=lambda: {"gray_spot": 6, "pinhole": 3, "solid_spot": 5,
                                                             "speck": 8, "scratch": 4})
    gray_area_mm2: list[float] = field(default_factory=lambda: [0.04, 4.0])
    gray_depth: list[float] = field(default_factory=lambda: [0.04, 0.7])
    pinhole_area_mm2: list[float] = field(default_factory=lambda: [0.02, 0.3])
    pinhole_depth: list[float] = field(default_factory=lambda: [0.6, 1.0])
    solid_area_mm2: list[float] = field(default_factory=lambda: [0.03, 3.0])
    solid_depth: list[float] = field(default_factory=lambda: [0.04, 0.8])
    speck_area_mm2: list[float] = field(default_factory=lambda: [0.0005, 0.012])
    scratch_len_mm: list[float] = field(default_factory=lambda: [1.0, 5.0])
    scratch_width_mm: list[float] = field(default_factory=lambda: [0.02, 0.05])
    irregularity: float = 0.15                                        # blob outline harmonics (relative radius)
    aspect: list[float] = field(default_factory=lambda: [1.0, 2.0])
    edge_px600: list[float] = field(default_factory=lambda: [0.5, 3.0])  # soft edge width of a spot
    core_prob: float = 0.25                                           # gray spots with a dark agglomerate core
    min_spacing_mm: float = 5.0
    visible_delta_e: float = 5.0                                      # peak ΔE a visible-type defect needs …
    visible_area_mm2: float = 0.05                                    # … and its area


def domain_config(domain: str | None = None, **overrides) -> SimConfig:
    """A :class:`SimConfig` with the ``domain`` preset's ranges, then ``overrides``."""
    if domain is not None and domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}: one of {', '.join(DOMAINS)}")
    return SimConfig(**{**(DOMAINS[domain] if domain else {}), **overrides, "domain": domain})


def page_pixels(cfg: SimConfig) -> tuple[int, int]:
    if isinstance(cfg.size, str):
        if cfg.size.lower() not in PAGE_INCHES:
            raise ValueError(f"size must be letter, a4 or [w, h] pixels, got {cfg.size!r}")
        w_in, h_in = PAGE_INCHES[cfg.size.lower()]
        return int(round(w_in * cfg.dpi)), int(round(h_in * cfg.dpi))
    return int(cfg.size[0]), int(cfg.size[1])


def _mm(cfg: SimConfig, mm: float) -> float:
    return mm * cfg.dpi / 25.4


def draw(rng: np.random.Generator, spec: Spec):
    """One value of a Spec: a value as is; a list of strings → one of them; [lo, hi] → uniform (integers:
    inclusive integers); a list of ranges → one range, then uniform."""
    if not isinstance(spec, list | tuple):
        return spec
    if len(spec) == 0:
        raise ValueError("empty setting")
    if all(isinstance(s, str) for s in spec):
        return spec[int(rng.integers(len(spec)))]
    if all(isinstance(s, list | tuple) for s in spec):
        return draw(rng, spec[int(rng.integers(len(spec)))])
    if len(spec) == 2:
        lo, hi = spec
        if isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool):
            return int(rng.integers(lo, hi + 1))
        return float(rng.uniform(float(lo), float(hi))) if hi != lo else float(lo)
    raise ValueError(f"a setting is a value, [lo, hi], a list of choices or a list of ranges: {spec!r}")


def parse_color(name: str) -> tuple[float, float, float, float]:
    """A palette name or 'c40m0y70k0' (percentages) → CMYK coverages in [0, 1]."""
    if name in PALETTE:
        return PALETTE[name]
    import re

    m = re.fullmatch(r"c(\d+)m(\d+)y(\d+)k(\d+)", name)
    if not m:
        raise ValueError(f"unknown colour {name!r}: a palette name ({', '.join(PALETTE)}) or cXXmXXyXXkXX")
    return tuple(min(1.0, int(v) / 100.0) for v in m.groups())


def _random_color(rng: np.random.Generator, coverage: Spec, dark_prob: float) -> str:
    c = np.zeros(4)
    if rng.random() < dark_prob:
        if rng.random() < 0.5:
            c[3] = rng.uniform(0.5, 0.9)
            if rng.random() < 0.5:
                c[rng.integers(3)] = draw(rng, coverage)
        else:
            c[:3] = rng.uniform(0.6, 0.9, 3)
    else:
        n = 1 + int(rng.random() < 0.6)
        for i in rng.permutation(3)[:n]:
            c[i] = draw(rng, coverage)
        if rng.random() < 0.15:
            c[3] = rng.uniform(0.1, 0.4)
    p = np.round(c * 100).astype(int)
    return f"c{p[0]}m{p[1]}y{p[2]}k{p[3]}"


def _colors(cfg: SimConfig, n: int, rng: np.random.Generator) -> list[str]:
    if isinstance(cfg.colors, list | tuple):
        names = list(cfg.colors)
        return [names[i % len(names)] for i in rng.permutation(max(n, len(names)))[:n]]
    if cfg.colors not in ("palette", "random", "mixed"):
        raise ValueError(f"colors must be palette, random, mixed or a list of colours, got {cfg.colors!r}")
    names = list(PALETTE)
    pal = [names[i % len(names)] for i in rng.permutation(max(n, len(names)))[:n]]
    out = []
    for i in range(n):
        use_pal = cfg.colors == "palette" or (cfg.colors == "mixed" and rng.random() < 0.35)
        out.append(pal[i] if use_pal else _random_color(rng, cfg.coverage, cfg.dark_prob))
    return out


def _layout(cfg: SimConfig, w: int, h: int, rng: np.random.Generator) -> list[dict]:
    """Regions (boxes + colours) below the barcode band."""
    m, g = _mm(cfg, cfg.margin_mm), _mm(cfg, cfg.gap_mm)
    top = m + _mm(cfg, cfg.barcode_mm) + g
    rows, cols = cfg.grid
    rh = (h - top - m - (rows - 1) * g) / rows
    cw = (w - 2 * m - (cols - 1) * g) / cols
    colors = _colors(cfg, rows * cols, rng)
    regions = []
    for r in range(rows):
        for c in range(cols):
            x0, y0 = m + c * (cw + g), top + r * (rh + g)
            regions.append({"box": [int(round(x0)), int(round(y0)), int(round(x0 + cw)), int(round(y0 + rh))],
                            "color": colors[r * cols + c]})
    return regions


def _settings(cfg: SimConfig, rng: np.random.Generator) -> dict:
    """The page's scanner and screen settings, drawn from the config's Specs."""
    s = {k: draw(rng, getattr(cfg, k)) for k in ("screen", "lpi", "angle_offset_deg", "dot_gain", "dot_softness",
                                                   "fm_dot", "ink_jitter", "blur_sigma_px600", "sharpen", "noise",
                                                   "noise_rho", "illumination", "skew_deg", "paper",
                                                   "paper_texture")}
    if s["screen"] not in SHAPE_IDS:
        raise ValueError(f"screen must be one of {', '.join(SHAPE_IDS)}, got {s['screen']!r}")
    s["angles_deg"] = [float(a + s["angle_offset_deg"]) for a in SCREEN_DEG]
    return s


class _Renderer:
    """Everything needed to render any window of one page's print (transmittance) and to scan it."""

    def __init__(self, cfg: SimConfig, s: dict, rng: np.random.Generator, w: int, h: int) -> None:
        self.cfg, self.s, self.w, self.h = cfg, s, w, h
        shape = SHAPE_IDS[s["screen"]]
        period = cfg.dpi / float(s["lpi"])
        # FM: a stochastic screen at the printer's resolution (FM_DEVICE_DPI), dots of fm_dot device pixels; each
        # scan pixel integrates ss×ss device pixels
        ss = max(1, int(round(FM_DEVICE_DPI / cfg.dpi)))
        self.tile = fm_tile(rng, 256, max(1, int(s["fm_dot"]))) if shape == 3 else np.zeros((1, 1), np.float32)
        self.scr = np.zeros((4, 8), np.float64)
        tsz = self.tile.shape[0]
        for c in range(4):
            ph = rng.uniform(0, 2 * math.pi, 2) if shape != 3 else rng.integers(0, tsz, 2).astype(np.float64)
            soft = float(s["dot_softness"]) if shape != 3 else 0.0
            self.scr[c] = (1.0, shape, period if shape != 3 else ss, math.radians(s["angles_deg"][c]), ph[0], ph[1],
                           float(s["dot_gain"]), soft)
        jit = float(s["ink_jitter"])
        change = rng.uniform(-jit, jit, ABSORB.shape)
        change[3] = change[3].mean() * 0.5                     # black stays neutral
        self.absorb = np.clip(ABSORB * (1 + change), 0.0, 0.97).astype(np.float32)
        self.luts = tone_luts()
        self.empty = np.zeros((4, 0, 0), np.float32)
        self.lin = self._linearise(float(s["dot_gain"]))

    def _linearise(self, gain: float, levels: int = 33, patch: int = 96) -> np.ndarray:
        """The printer's tone linearisation, then its dot gain: per colorant, the threshold level whose rendered
        dot area is t + 4·gain·t(1 − t). (Dots of a few pixels seen through whole scan pixels cover more or less
        than their nominal area — a convex dot's edge pixels — so each screen is measured once on a patch.)"""
        grid = np.linspace(0.0, 1.0, LIN_SIZE + 1)
        ident = np.tile(grid, (4, 1))
        levels_t = np.linspace(0.0, 1.0, levels)
        target = np.clip(grid + 4 * gain * grid * (1 - grid), 0.0, 1.0)
        out = np.empty((4, LIN_SIZE + 1), np.float64)
        absorb = np.ones((4, 3), np.float32)
        buf = np.empty((patch, patch, 3), np.float32)
        tint = np.empty((4, patch, patch), np.float32)
        for c in range(4):
            cover = np.empty(levels)
            for i, t in enumerate(levels_t):
                tint[:] = 0.0
                tint[c] = t
                halftone_rows(tint, np.zeros(4), 0, 0, self.scr, self.luts, ident, self.tile, absorb, buf, 0, patch)
                cover[i] = 1.0 - float(buf[..., 0].mean())
            cover = np.maximum.accumulate(cover)
            # the level giving each target coverage (cover is non-decreasing; flat parts take their first level)
            uniq, first = np.unique(cover, return_index=True)
            out[c] = np.interp(target, uniq, levels_t[first]) if len(uniq) > 1 else target
        return out

    def print_window(self, out: np.ndarray, x0: int, y0: int, cmyk, tint: np.ndarray | None = None,
                     threads: int | None = None) -> None:
        """Transmittance of a window at (x0, y0) (``out``: h×w×3 float32, written in place)."""
        t = self.empty if tint is None else np.ascontiguousarray(tint, np.float32)
        # the constant tint rounded like a tint window's (float32), so both paths draw the same dots
        c = np.asarray(cmyk, np.float32).astype(np.float64)
        run_split(halftone_rows, out.shape[0], t, c, int(y0), int(x0), self.scr,
                  self.luts, self.lin, self.tile, self.absorb, out, threads=threads)

    def optics(self, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Scanner blur of a transmittance image, and the extra-blurred copy its unsharp masking subtracts
        (``None`` without sharpening): the scan is (1 + amount)·blurred − amount·soft."""
        sigma = float(self.s["blur_sigma_px600"]) * self.cfg.dpi / 600.0
        if sigma > 0.05:
            trans = cv2.GaussianBlur(trans, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        if float(self.s["sharpen"]) <= 0:
            return trans, None
        return trans, cv2.GaussianBlur(trans, (0, 0), max(0.5, self.cfg.dpi / 600.0), borderType=cv2.BORDER_REFLECT)

    def optics_sharpened(self, trans: np.ndarray) -> np.ndarray:
        blurred, soft = self.optics(trans)
        if soft is None:
            return blurred
        a = float(self.s["sharpen"])
        return (1 + a) * blurred - a * soft


def _blob(yy: np.ndarray, xx: np.ndarray, d: dict) -> np.ndarray:
    """Profile in [0, 1] of an irregular soft-edged blob (or a thin line for scratches) on pixel centres."""
    dx, dy = xx + 0.5 - d["center"][0], yy + 0.5 - d["center"][1]
    ca, sa = math.cos(d["angle"]), math.sin(d["angle"])
    a, b = dx * ca + dy * sa, -dx * sa + dy * ca
    if d["type"] == "scratch":
        across, along = np.abs(b), np.abs(a)
        return (np.clip(d["width_px"] / 2 - across + 0.5, 0, 1) * np.clip(d["length_px"] / 2 - along + 0.5, 0, 1)
                ).astype(np.float32)
    r = d["radius_px"]
    asp = d["aspect"]
    rx, ry = r * math.sqrt(asp), r / math.sqrt(asp)
    rho = np.sqrt((a / rx) ** 2 + (b / ry) ** 2)
    theta = np.arctan2(b / ry, a / rx)
    edge = np.ones_like(rho)
    for k, (amp, ph) in enumerate(d["harmonics"], start=2):
        edge += amp * np.cos(k * theta + ph)
    dist = (rho - edge) * math.sqrt(rx * ry)                        # ≈ signed distance to the outline in px
    soft = max(d["edge_px"], 0.5)
    return np.clip(0.5 - dist / soft, 0, 1).astype(np.float32)


def _apply(tint: np.ndarray, wx0: int, wy0: int, d: dict) -> float:
    """Draw defect ``d`` into the tint window (4×h×w at page position wx0, wy0); returns its area in px."""
    h, w = tint.shape[1:]
    yy, xx = np.mgrid[wy0:wy0 + h, wx0:wx0 + w].astype(np.float32)
    prof = _blob(yy, xx, d)
    depth = d["depth"]
    if d["kind"] == "light":
        tint *= 1.0 - depth * prof[None]
    elif d["type"] == "speck":          # a stray toner particle: black, whatever the tint
        tint[3] += depth * prof * (1.0 - tint[3])
    else:
        present = np.maximum((tint > 0).astype(np.float32), np.array([0, 0, 0, 0.3], np.float32)[:, None, None])
        tint += depth * prof[None] * (1.0 - tint) * present
    if d.get("core_radius_px"):
        core = dict(d, type="core", radius_px=d["core_radius_px"], aspect=1.0, harmonics=[], edge_px=0.7)
        cp = _blob(yy, xx, core)
        tint[3] += d["core_depth"] * cp * (1.0 - tint[3])
    return float(prof.sum())


def _extent(d: dict) -> float:
    """Radius (px) of a circle around the defect's centre that holds all of it."""
    if d["type"] == "scratch":
        return d["length_px"] / 2 + d["width_px"] + 2
    r = d["radius_px"] * math.sqrt(max(d["aspect"], 1 / d["aspect"]))
    return r * (1 + sum(abs(a) for a, _ in d["harmonics"])) + d["edge_px"] + 2


def _defect_list(cfg: SimConfig, rng: np.random.Generator, regions: list[dict], w: int, h: int) -> list[dict]:
    kinds = [k for k, n in cfg.defects.items() for _ in range(int(n))]
    unknown = set(kinds) - set(VISIBLE) - set(DISTRACTORS)
    if unknown:
        raise ValueError(f"unknown defect types {sorted(unknown)}: {', '.join(VISIBLE + DISTRACTORS)}")
    rng.shuffle(kinds)
    px_mm = cfg.dpi / 25.4
    spacing = cfg.min_spacing_mm * px_mm
    placed: list[tuple[float, float]] = []
    out: list[dict] = []

    def log_uniform(lo_hi):
        lo, hi = lo_hi
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    for kind in kinds:
        d: dict = {"type": kind, "angle": float(rng.uniform(0, math.pi)), "harmonics": [], "aspect": 1.0,
                   "edge_px": 0.7 * cfg.dpi / 600}
        if kind == "scratch":
            d.update(length_px=rng.uniform(*cfg.scratch_len_mm) * px_mm,
                     width_px=max(rng.uniform(*cfg.scratch_width_mm) * px_mm, 0.5), depth=float(rng.uniform(0.2, 0.7)),
                     kind="light")
            d["radius_px"] = d["length_px"] / 2
        else:
            rng_area = {"gray_spot": cfg.gray_area_mm2, "pinhole": cfg.pinhole_area_mm2,
                        "solid_spot": cfg.solid_area_mm2, "speck": cfg.speck_area_mm2}[kind]
            area = log_uniform(rng_area)
            d["radius_px"] = max(math.sqrt(area / math.pi) * px_mm, 0.3)
            if kind in ("gray_spot", "solid_spot"):
                d["aspect"] = float(rng.uniform(*cfg.aspect))
                d["harmonics"] = [(float(rng.uniform(-cfg.irregularity, cfg.irregularity)),
                                   float(rng.uniform(0, 2 * math.pi))) for _ in range(3)]
                d["edge_px"] = float(rng.uniform(*cfg.edge_px600)) * cfg.dpi / 600
            d["depth"] = float({"gray_spot": lambda: rng.uniform(*cfg.gray_depth),
                                "pinhole": lambda: rng.uniform(*cfg.pinhole_depth),
                                "solid_spot": lambda: rng.uniform(*cfg.solid_depth),
                                "speck": lambda: rng.uniform(0.5, 1.0)}[kind]())
            if kind == "speck":
                d["kind"] = "light" if rng.random() < 0.5 else "dark"
            else:
                d["kind"] = "dark" if kind == "solid_spot" else "light"
            if kind == "gray_spot" and rng.random() < cfg.core_prob and d["radius_px"] > 4:
                d["core_radius_px"] = float(rng.uniform(0.12, 0.3) * d["radius_px"])
                d["core_depth"] = float(rng.uniform(0.3, 0.9))
        ext = _extent(d)
        for _ in range(60):
            ri = int(rng.integers(len(regions)))
            x0, y0, x1, y1 = regions[ri]["box"]
            pad = _mm(cfg, cfg.inset_mm) + ext + _mm(cfg, 0.5)
            if x1 - x0 <= 2 * pad or y1 - y0 <= 2 * pad:
                continue
            cx, cy = rng.uniform(x0 + pad, x1 - pad), rng.uniform(y0 + pad, y1 - pad)
            if all((cx - px) ** 2 + (cy - py) ** 2 >= spacing**2 for px, py in placed):
                break
        else:
            continue
        placed.append((cx, cy))
        d.update(center=[float(cx), float(cy)], region=ri, color=regions[ri]["color"])
        e = int(math.ceil(ext))
        d["window"] = [max(0, int(cx) - e), max(0, int(cy) - e), min(w, int(cx) + e + 2), min(h, int(cy) + e + 2)]
        out.append(d)
    return out


def _window_tint(cmyk, win: list[int], defects: list[dict]) -> tuple[np.ndarray, list[float]]:
    x0, y0, x1, y1 = win
    tint = np.broadcast_to(np.asarray(cmyk, np.float32)[:, None, None], (4, y1 - y0, x1 - x0)).copy()
    areas = [_apply(tint, x0, y0, d) for d in defects]
    return tint, areas


def _overlaps(a: list[int], b: list[int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def simulate_page(cfg: SimConfig, seed: int = 0, with_defects: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render one page → (uint8 H×W×3 sRGB scan, bool mask, ground truth). Settings, layout, screens and noise
    depend only on ``seed`` (defects come from their own stream), so ``with_defects=False`` gives the same page
    without its defects."""
    if cfg.domain is not None and cfg.domain not in DOMAINS:
        raise ValueError(f"unknown domain {cfg.domain!r}: one of {', '.join(DOMAINS)}")
    w, h = page_pixels(cfg)
    rng = np.random.default_rng(seed)
    s = _settings(cfg, rng)
    regions = _layout(cfg, w, h, rng)
    ren = _Renderer(cfg, s, rng, w, h)
    trans = np.ones((h, w, 3), np.float32)
    mask = np.zeros((h, w), bool)
    inset = int(round(_mm(cfg, cfg.inset_mm)))
    for reg in regions:
        x0, y0, x1, y1 = reg["box"]
        ren.print_window(trans[y0:y1, x0:x1], x0, y0, parse_color(reg["color"]))
        mask[y0 + inset:y1 - inset, x0 + inset:x1 - inset] = True
    # barcode (black bars) and fiducial crosses in the corners of the printable area: solid black, masked
    black = 1.0 - ren.absorb[3]
    m = int(round(_mm(cfg, cfg.margin_mm)))
    bh = int(round(_mm(cfg, cfg.barcode_mm)))
    bar_w = max(1, int(round(_mm(cfg, 0.33))))
    xs = m + np.cumsum(rng.integers(1, 4, size=max(1, (w - 2 * m) // (2 * bar_w))) * bar_w)
    for i, x in enumerate(xs[xs < w // 2]):
        if i % 2 == 0:
            trans[m:m + bh, x:x + bar_w] = black
    f = max(2, int(round(_mm(cfg, cfg.fiducial_mm))))
    lw = max(1, f // 8)
    for fx, fy in ((m // 2, m // 2), (w - m // 2, m // 2), (m // 2, h - m // 2), (w - m // 2, h - m // 2)):
        trans[max(0, fy - f // 2):fy + f // 2, max(0, fx - lw):fx + lw] = black
        trans[max(0, fy - lw):fy + lw, max(0, fx - f // 2):fx + f // 2] = black
    defects = _defect_list(cfg, np.random.default_rng([seed, 2]), regions, w, h) if with_defects else []
    for d in defects:
        cmyk = parse_color(d["color"])
        win = d["window"]
        near = [e for e in defects if e["region"] == d["region"] and _overlaps(e["window"], win)]
        tint, areas = _window_tint(cmyk, win, near)
        d["area_mm2"] = areas[near.index(d)] * (25.4 / cfg.dpi) ** 2
        x0, y0, x1, y1 = win
        ren.print_window(trans[y0:y1, x0:x1], x0, y0, cmyk, tint, threads=1)
    if defects:
        _visibility(cfg, ren, defects)
    skew = float(s["skew_deg"])
    affine = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), skew, 1.0) if abs(skew) > 1e-6 else None
    if affine is not None:
        trans = cv2.warpAffine(trans, affine, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(1.0, 1.0, 1.0))
        mask = cv2.warpAffine(mask.view(np.uint8), affine, (w, h), flags=cv2.INTER_NEAREST) > 0
    trans, soft = ren.optics(trans)
    rgb = _scan(cfg, s, trans, soft, np.random.default_rng([seed, 1]))
    gt_defects = [_gt(d, affine) for d in defects]
    for d in gt_defects:
        d["visible"] = bool(d["type"] in VISIBLE and d["delta_e"] >= cfg.visible_delta_e
                            and d["area_mm2"] >= cfg.visible_area_mm2)
        d["faint"] = bool(d["type"] in VISIBLE and not d["visible"])
    gt_regions = [{"box": _box_after(r["box"], affine, w, h), "color": r["color"]} for r in regions]
    gt = {"width": w, "height": h, "dpi": cfg.dpi, "regions": gt_regions, "defects": gt_defects,
          "scan": s, "config": asdict(cfg)}
    return rgb, mask, gt


def _box_after(box, affine, w: int, h: int) -> list[int]:
    if affine is None:
        return [int(v) for v in box]
    x0, y0, x1, y1 = box
    pts = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ affine.T
    return [max(0, int(math.floor(pts[:, 0].min()))), max(0, int(math.floor(pts[:, 1].min()))),
            min(w, int(math.ceil(pts[:, 0].max()))), min(h, int(math.ceil(pts[:, 1].max())))]


def _gt(d: dict, affine) -> dict:
    """The ground-truth record of a drawn defect, in scan coordinates."""
    cx, cy = d["center"]
    bbox = d["bbox"]
    if affine is not None:
        cx, cy = (affine @ np.array([cx, cy, 1.0])).tolist()
        bbox = _box_after(bbox, affine, 1 << 30, 1 << 30)
    out = {"type": d["type"], "kind": d["kind"], "center": [float(cx), float(cy)],
           "radius_px": float(d["radius_px"]), "depth": float(d["depth"]), "bbox": [int(v) for v in bbox],
           "area_mm2": float(d["area_mm2"]), "delta_e": float(d["delta_e"]), "region": d["region"],
           "color": d["color"]}
    if d.get("core_radius_px"):
        out["core"] = True
    return out


def _visibility(cfg: SimConfig, ren: _Renderer, defects: list[dict]) -> None:
    """Each defect's box (where its profile is > 0) and peak ΔE: descreened L*a*b* (Sec. 1.2.1, the detector's
    own preprocessing) of a window rendered with and without the defect, through the scanner optics, noise-free
    and at unit illumination, before skew."""
    from projects.printdefect.page import descreen_numpy, descreen_params, rgb_to_lab_numpy

    k, sd = descreen_params(cfg.dpi)
    sigma = float(ren.s["blur_sigma_px600"]) * cfg.dpi / 600.0
    halo = k + int(math.ceil(4 * sigma)) + 6
    gamma = srgb_lut()
    paper = float(ren.s["paper"])
    for d in defects:
        x0, y0, x1, y1 = d["window"]
        wx0, wy0 = max(0, x0 - halo), max(0, y0 - halo)
        wx1, wy1 = min(ren.w, x1 + halo), min(ren.h, y1 + halo)
        cmyk = parse_color(d["color"])
        tint, _ = _window_tint(cmyk, [wx0, wy0, wx1, wy1], [d])
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        prof = _blob(yy, xx, d)
        ys, xs = np.nonzero(prof > 0)
        if len(ys) == 0:
            ys, xs = np.array([int(d["center"][1]) - y0]), np.array([int(d["center"][0]) - x0])
        d["bbox"] = [int(x0 + xs.min()), int(y0 + ys.min()), int(x0 + xs.max() + 1), int(y0 + ys.max() + 1)]
        labs = []
        for t in (None, tint):
            out = np.empty((wy1 - wy0, wx1 - wx0, 3), np.float32)
            ren.print_window(out, wx0, wy0, cmyk, t, threads=1)
            out = ren.optics_sharpened(out) * paper
            srgb = np.interp(np.clip(out, 0, 1), np.linspace(0, 1, len(gamma)), gamma).astype(np.float32)
            labs.append(rgb_to_lab_numpy(descreen_numpy(srgb, k, sd)))
        de = np.sqrt(((labs[1] - labs[0]) ** 2).sum(-1))
        bx0, by0, bx1, by1 = d["bbox"]
        d["delta_e"] = float(de[by0 - wy0:by1 - wy0, bx0 - wx0:bx1 - wx0].max())


def _scan(cfg: SimConfig, s: dict, trans: np.ndarray, soft: np.ndarray | None, rng: np.random.Generator
          ) -> np.ndarray:
    """Unsharp masking, paper white and texture, illumination, sRGB, noise → uint8."""
    h, w = trans.shape[:2]
    amp = float(s["illumination"])
    illum = np.array([amp, *rng.uniform(-1, 1, 2), rng.uniform(0.5, 1.5), rng.uniform(0.25, 1.0),
                      rng.uniform(0, 2 * math.pi)], np.float64)
    tex = float(s["paper_texture"])
    step = max(2, int(round(16 * cfg.dpi / 600)))
    lo_shape = (h // step + 3, w // step + 3)
    if tex > 0:
        lo = cv2.GaussianBlur(rng.standard_normal(lo_shape).astype(np.float32), (0, 0), 2.0)
        lo *= tex / max(float(lo.std()), 1e-6)
        noise = np.tile(rng.standard_normal((256, 256)).astype(np.float32), (3, 3))
        fine = np.ascontiguousarray(cv2.GaussianBlur(noise, (0, 0), 1.0)[256:512, 256:512])   # periodic tile
        fine *= 0.5 * tex / max(float(fine.std()), 1e-6)
    else:
        lo, fine = np.zeros(lo_shape, np.float32), np.zeros((1, 1), np.float32)
    out = np.empty((h, w, 3), np.uint8)
    seed = int(rng.integers(1, 2**62))
    amount = float(s["sharpen"]) if soft is not None else 0.0
    run_split(scan_rows, h, trans, trans if soft is None else soft, amount, float(s["paper"]), illum, lo,
              float(step), fine, srgb_lut(), float(s["noise"]), float(s["noise_rho"]), seed, out)
    return out


def write_simulated_set(out: str | Path, pages: int, cfg: SimConfig | None = None, seed: int = 0,
                        prefix: str = "page") -> list[Path]:
    """Write ``pages`` RGBA PNG pages (alpha = mask, dpi in the file) with ``<stem>.json`` ground truth."""
    from projects.printdefect.page import write_page

    cfg = cfg or SimConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(pages):
        rgb, mask, gt = simulate_page(cfg, seed=seed * 100003 + i)
        p = out / f"{prefix}_{i:03d}.png"
        write_page(p, rgb, mask, cfg.dpi)
        atomic_write_text(p.with_suffix(".json"), json.dumps(gt, indent=1) + "\n")
        paths.append(p)
    return paths


USAGE = ("usage: python -m projects.printdefect.simulate out=DIR [pages=N] [seed=0] [domain=a|b|wide|classic] "
         "[dpi=600] [size=letter|a4|[w,h]] [any SimConfig field=value, lists as JSON]")


def main(argv: list[str] | None = None) -> None:
    """``key=value`` arguments: out, pages, seed, prefix and any :class:`SimConfig` field (lists as JSON)."""
    args = dict(a.split("=", 1) if "=" in a else (a, "") for a in (argv if argv is not None else sys.argv[1:]))
    out = args.pop("out", None)
    if not out:
        sys.stderr.write(f"error: {USAGE}\n")
        raise SystemExit(2)
    try:
        pages, seed, prefix = int(args.pop("pages", 4)), int(args.pop("seed", 0)), args.pop("prefix", "page")
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    names = {f.name for f in fields(SimConfig)}
    kw = {}
    for k, v in args.items():
        if k not in names:
            sys.stderr.write(f"error: unknown simulator option {k!r}\n")
            raise SystemExit(2)
        try:
            kw[k] = json.loads(v)
        except json.JSONDecodeError:
            kw[k] = v
    try:
        cfg = domain_config(kw.pop("domain", None), **kw)
        paths = write_simulated_set(out, pages, cfg, seed, prefix)
    except (ValueError, TypeError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    print(f"wrote {len(paths)} pages to {out}")


if __name__ == "__main__":
    main()
