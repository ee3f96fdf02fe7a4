"""Simulated scanned test pages with local defects (the dissertation evaluates on simulated spots, Fig. 1.1).

A page (letter / A4 / any pixel size, at any dpi) holds a grid of constant-tint regions in several colours. Each
colorant separation is halftoned with its own rotated clustered-dot screen; the dots are combined with a simple
subtractive ink model on white paper; a scanner model adds optical blur, uneven illumination and noise. Fiducial
marks, a barcode, the margins and the gaps between regions are masked (alpha = 0). Defects are drawn into the tint
fields before halftoning: gray spots and pinholes (less toner: lighter), solid spots (more toner: darker) — the
visible local defects — and, as distractors, invisible specks and thin scratches. The ground truth (regions,
defects with type, light/dark, centre, radius, bounding box, visibility) is written beside each page as json.

    python -m projects.printdefect.simulate out=data/printdefect/train pages=12 dpi=600 size=letter seed=0
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from projects.printdefect.page import write_page
from shared.io import atomic_write_text

# CMYK tints of the region colours (12 colours like the dissertation's blockwise dataset)
PALETTE: dict[str, tuple[float, float, float, float]] = {
    "cyan": (0.6, 0, 0, 0), "magenta": (0, 0.6, 0, 0), "yellow": (0, 0, 0.7, 0), "red": (0, 0.6, 0.6, 0),
    "green": (0.6, 0, 0.6, 0), "blue": (0.6, 0.6, 0, 0), "gray": (0, 0, 0, 0.4), "light-cyan": (0.3, 0, 0, 0),
    "light-magenta": (0, 0.3, 0, 0), "orange": (0, 0.4, 0.7, 0), "violet": (0.35, 0.55, 0, 0),
    "dark-gray": (0, 0, 0, 0.65),
}
# fraction of red, green, blue light each colorant absorbs at full coverage
ABSORB = np.array([[0.80, 0.25, 0.05], [0.10, 0.80, 0.30], [0.02, 0.10, 0.85], [0.90, 0.90, 0.90]], np.float32)
SCREEN_DEG = (15.0, 75.0, 0.0, 45.0)
PAGE_INCHES = {"letter": (8.5, 11.0), "a4": (8.27, 11.69)}
VISIBLE = ("gray_spot", "pinhole", "solid_spot")
LIGHT = ("gray_spot", "pinhole", "speck_light", "scratch")


@dataclass
class SimConfig:
    """Sizes in mm (converted with ``dpi``); ``size`` = 'letter', 'a4' or [width_px, height_px]."""

    dpi: float = 600.0
    size: str | list[int] = "letter"
    lpi: float = 150.0
    grid: list[int] = field(default_factory=lambda: [3, 2])          # region rows, cols
    margin_mm: float = 12.0
    gap_mm: float = 4.0
    inset_mm: float = 1.0                                             # masked band inside each region's edge
    barcode_mm: float = 8.0
    fiducial_mm: float = 4.0
    colors: list[str] | None = None
    defects: dict[str, int] = field(default_factory=lambda: {"gray_spot": 8, "pinhole": 3, "solid_spot": 5,
                                                             "speck": 10, "scratch": 6})
    gray_radius_mm: list[float] = field(default_factory=lambda: [0.25, 0.6])
    gray_depth: list[float] = field(default_factory=lambda: [0.05, 0.35])
    pinhole_radius_mm: list[float] = field(default_factory=lambda: [0.12, 0.2])
    solid_radius_mm: list[float] = field(default_factory=lambda: [0.2, 0.5])
    solid_depth: list[float] = field(default_factory=lambda: [0.04, 0.3])
    speck_radius_mm: list[float] = field(default_factory=lambda: [0.03, 0.08])
    scratch_len_mm: list[float] = field(default_factory=lambda: [1.5, 4.0])
    scratch_width_mm: float = 0.06
    min_spacing_mm: float = 5.0
    visible_delta_e: float = 10.0                                     # peak ΔE a visible-type defect needs
    blur_sigma_px600: float = 1.0
    noise: float = 1.5                                                # scanner noise, 8-bit levels
    illumination: float = 0.03                                        # ± uneven illumination
    paper: float = 0.94


def page_pixels(cfg: SimConfig) -> tuple[int, int]:
    if isinstance(cfg.size, str):
        if cfg.size.lower() not in PAGE_INCHES:
            raise ValueError(f"size must be letter, a4 or [w, h] pixels, got {cfg.size!r}")
        w_in, h_in = PAGE_INCHES[cfg.size.lower()]
        return int(round(w_in * cfg.dpi)), int(round(h_in * cfg.dpi))
    return int(cfg.size[0]), int(cfg.size[1])


def _mm(cfg: SimConfig, mm: float) -> float:
    return mm * cfg.dpi / 25.4


def _screen(h: int, w: int, period: float, angle_deg: float, phase: tuple[float, float]) -> np.ndarray:
    """Clustered-dot threshold array in [0, 1] (0 at the dot centres: dots grow outwards)."""
    th = math.radians(angle_deg)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (x * math.cos(th) + y * math.sin(th)) * (2 * math.pi / period) + phase[0]
    v = (-x * math.sin(th) + y * math.cos(th)) * (2 * math.pi / period) + phase[1]
    return 0.5 - 0.25 * (np.cos(u) + np.cos(v))


def _disk(h: int, w: int, cx: float, cy: float, r: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Anti-aliased disk profile (1 inside, 0 outside) over its bounding window."""
    x0, x1 = max(0, int(math.floor(cx - r - 1))), min(w, int(math.ceil(cx + r + 2)))
    y0, y1 = max(0, int(math.floor(cy - r - 1))), min(h, int(math.ceil(cy + r + 2)))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = np.sqrt((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2)
    return np.clip(r - d + 0.5, 0.0, 1.0), (slice(y0, y1), slice(x0, x1))


def _line(h: int, w: int, cx: float, cy: float, length: float, width: float, angle: float):
    ux, uy = math.cos(angle), math.sin(angle)
    ext = length / 2 + width + 1
    x0, x1 = max(0, int(cx - ext)), min(w, int(math.ceil(cx + ext)) + 1)
    y0, y1 = max(0, int(cy - ext)), min(h, int(math.ceil(cy + ext)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    px, py = xx + 0.5 - cx, yy + 0.5 - cy
    along = px * ux + py * uy
    across = np.abs(-px * uy + py * ux)
    prof = np.clip(width / 2 - across + 0.5, 0, 1) * np.clip(length / 2 - np.abs(along) + 0.5, 0, 1)
    return prof, (slice(y0, y1), slice(x0, x1))


def _layout(cfg: SimConfig, w: int, h: int, rng: np.random.Generator):
    """Regions (boxes + colours), barcode bars and fiducials."""
    m, g = _mm(cfg, cfg.margin_mm), _mm(cfg, cfg.gap_mm)
    top = m + _mm(cfg, cfg.barcode_mm) + g
    rows, cols = cfg.grid
    rh = (h - top - m - (rows - 1) * g) / rows
    cw = (w - 2 * m - (cols - 1) * g) / cols
    names = list(cfg.colors or PALETTE)
    colors = [names[i % len(names)] for i in rng.permutation(max(rows * cols, len(names)))[: rows * cols]]
    regions = []
    for r in range(rows):
        for c in range(cols):
            x0, y0 = m + c * (cw + g), top + r * (rh + g)
            regions.append({"box": [int(round(x0)), int(round(y0)), int(round(x0 + cw)), int(round(y0 + rh))],
                            "color": colors[r * cols + c]})
    return regions


def simulate_page(cfg: SimConfig, seed: int = 0, with_defects: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render one page → (uint8 H×W×3 sRGB scan, bool mask, ground truth). The scanner noise and the layout depend
    only on ``seed``, so ``with_defects=False`` gives the same page without its defects."""
    w, h = page_pixels(cfg)
    rng = np.random.default_rng(seed)
    regions = _layout(cfg, w, h, rng)
    tint = np.zeros((4, h, w), np.float32)
    mask = np.zeros((h, w), bool)
    inset = int(round(_mm(cfg, cfg.inset_mm)))
    for reg in regions:
        x0, y0, x1, y1 = reg["box"]
        tint[:, y0:y1, x0:x1] = np.array(PALETTE[reg["color"]], np.float32)[:, None, None]
        mask[y0 + inset:y1 - inset, x0 + inset:x1 - inset] = True
    # barcode (black bars, masked) and fiducial crosses in the four corners of the printable area (masked)
    m = int(round(_mm(cfg, cfg.margin_mm)))
    bh = int(round(_mm(cfg, cfg.barcode_mm)))
    bar_w = max(1, int(round(_mm(cfg, 0.33))))
    xs = m + np.cumsum(rng.integers(1, 4, size=max(1, (w - 2 * m) // (2 * bar_w))) * bar_w)
    for i, x in enumerate(xs[xs < w // 2]):
        if i % 2 == 0:
            tint[3, m:m + bh, x:x + bar_w] = 1.0
    f = max(2, int(round(_mm(cfg, cfg.fiducial_mm))))
    lw = max(1, f // 8)
    for fx, fy in ((m // 2, m // 2), (w - m // 2, m // 2), (m // 2, h - m // 2), (w - m // 2, h - m // 2)):
        tint[3, max(0, fy - f // 2):fy + f // 2, max(0, fx - lw):fx + lw] = 1.0
        tint[3, max(0, fy - lw):fy + lw, max(0, fx - f // 2):fx + f // 2] = 1.0
    clean = tint.copy() if with_defects else None
    defects = _draw_defects(cfg, rng, tint, regions, inset, w, h) if with_defects else []
    rgb = _print_and_scan(cfg, tint, np.random.default_rng([seed, 1]), w, h)
    if defects:
        _visibility(cfg, defects, rgb, _print_and_scan(cfg, clean, np.random.default_rng([seed, 1]), w, h))
    gt = {"width": w, "height": h, "dpi": cfg.dpi, "regions": regions, "defects": defects,
          "config": {k: v for k, v in asdict(cfg).items()}}
    return rgb, mask, gt


def _draw_defects(cfg: SimConfig, rng: np.random.Generator, tint: np.ndarray, regions: list[dict], inset: int,
                  w: int, h: int) -> list[dict]:
    kinds = [k for k, n in cfg.defects.items() for _ in range(int(n))]
    rng.shuffle(kinds)
    spacing = _mm(cfg, cfg.min_spacing_mm)
    placed: list[tuple[float, float]] = []
    out: list[dict] = []
    pad = inset + _mm(cfg, 1.5)
    for kind in kinds:
        for _ in range(50):
            ri = int(rng.integers(len(regions)))
            x0, y0, x1, y1 = regions[ri]["box"]
            if x1 - x0 <= 2 * pad or y1 - y0 <= 2 * pad:
                continue
            cx, cy = rng.uniform(x0 + pad, x1 - pad), rng.uniform(y0 + pad, y1 - pad)
            if all((cx - px) ** 2 + (cy - py) ** 2 >= spacing**2 for px, py in placed):
                break
        else:
            continue
        placed.append((cx, cy))
        sub = kind
        if kind == "scratch":
            length = _mm(cfg, rng.uniform(*cfg.scratch_len_mm))
            width = max(_mm(cfg, cfg.scratch_width_mm), 0.6)
            angle = rng.uniform(0, math.pi)
            prof, win = _line(h, w, cx, cy, length, width, angle)
            depth = rng.uniform(0.3, 0.8)
            radius = length / 2
        else:
            rmm = {"gray_spot": cfg.gray_radius_mm, "pinhole": cfg.pinhole_radius_mm,
                   "solid_spot": cfg.solid_radius_mm, "speck": cfg.speck_radius_mm}[kind]
            radius = max(_mm(cfg, rng.uniform(*rmm)), 0.3)
            prof, win = _disk(h, w, cx, cy, radius)
            depth = {"gray_spot": rng.uniform(*cfg.gray_depth), "pinhole": rng.uniform(0.85, 1.0),
                     "solid_spot": rng.uniform(*cfg.solid_depth), "speck": rng.uniform(0.4, 0.95)}[kind]
            if kind == "speck":
                sub = "speck_light" if rng.random() < 0.5 else "speck_dark"
        t = tint[:, win[0], win[1]]
        if sub in LIGHT:
            t *= 1.0 - depth * prof[None]
        else:
            present = (t > 0).astype(np.float32)
            t += depth * prof[None] * (1.0 - t) * np.maximum(present, np.array([0, 0, 0, 0.3])[:, None, None])
        ys, xs = np.nonzero(prof > 0)
        bbox = [int(win[1].start + xs.min()), int(win[0].start + ys.min()),
                int(win[1].start + xs.max() + 1), int(win[0].start + ys.max() + 1)]
        out.append({"type": kind, "kind": "light" if sub in LIGHT else "dark", "visible": kind in VISIBLE,
                    "center": [float(cx), float(cy)], "radius_px": float(radius), "depth": float(depth),
                    "bbox": bbox, "area_mm2": float(prof.sum() * (25.4 / cfg.dpi) ** 2),
                    "region": ri, "color": regions[ri]["color"]})
    return out


def _visibility(cfg: SimConfig, defects: list[dict], rgb: np.ndarray, clean: np.ndarray) -> None:
    """Peak ΔE (descreened L*a*b*) between the page with and without its defects within each defect's box;
    a defect of a visible type counts as visible when it reaches ``visible_delta_e``."""
    from projects.printdefect.page import descreen_numpy, descreen_params, rgb_to_lab_numpy

    k, s = descreen_params(cfg.dpi)
    lab1, lab0 = (rgb_to_lab_numpy(descreen_numpy(x, k, s)) for x in (rgb, clean))
    de = np.sqrt(((lab1 - lab0) ** 2).sum(-1))
    for d in defects:
        x0, y0, x1, y1 = d["bbox"]
        d["delta_e"] = float(de[y0:y1, x0:x1].max())
        d["visible"] = bool(d["type"] in VISIBLE and d["delta_e"] >= cfg.visible_delta_e)


def _print_and_scan(cfg: SimConfig, tint: np.ndarray, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    period = cfg.dpi / cfg.lpi
    refl = np.full((h, w, 3), cfg.paper, np.float32)
    for c in range(4):
        if not tint[c].any():
            continue
        screen = _screen(h, w, period, SCREEN_DEG[c], tuple(rng.uniform(0, 2 * math.pi, 2)))
        dots = (tint[c] > screen).astype(np.float32)
        refl *= 1.0 - dots[..., None] * ABSORB[c][None, None]
    sigma = cfg.blur_sigma_px600 * cfg.dpi / 600.0
    if sigma > 0.05:
        refl = cv2.GaussianBlur(refl, (0, 0), sigma)
    if cfg.illumination:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a, b = rng.uniform(-1, 1, 2)
        field_ = a * (xx / w - 0.5) + b * (yy / h - 0.5) + 0.5 * np.cos(2 * math.pi * (xx / w + yy / (2 * h)))
        refl *= 1.0 + cfg.illumination * field_[..., None] / 1.5
    srgb = np.where(refl <= 0.0031308, 12.92 * refl, 1.055 * np.power(np.clip(refl, 0, None), 1 / 2.4) - 0.055)
    noisy = srgb * 255.0 + rng.normal(0.0, cfg.noise, srgb.shape).astype(np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def write_simulated_set(out: str | Path, pages: int, cfg: SimConfig | None = None, seed: int = 0,
                        prefix: str = "page") -> list[Path]:
    """Write ``pages`` RGBA PNG pages (alpha = mask, dpi in the file) with ``<stem>.json`` ground truth."""
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


def main(argv: list[str] | None = None) -> None:
    """``key=value`` arguments: out, pages, seed, prefix and any :class:`SimConfig` field (lists as JSON)."""
    args = dict(a.split("=", 1) for a in (argv if argv is not None else sys.argv[1:]))
    out = args.pop("out", None)
    if not out:
        sys.stderr.write("error: usage: python -m projects.printdefect.simulate out=DIR [pages=N] [dpi=600] "
                         "[size=letter|a4|[w,h]] [seed=0]\n")
        raise SystemExit(2)
    pages, seed, prefix = int(args.pop("pages", 4)), int(args.pop("seed", 0)), args.pop("prefix", "page")
    kw = {}
    for k, v in args.items():
        if k not in SimConfig.__dataclass_fields__:
            sys.stderr.write(f"error: unknown simulator option {k!r}\n")
            raise SystemExit(2)
        try:
            kw[k] = json.loads(v)
        except json.JSONDecodeError:
            kw[k] = v
    paths = write_simulated_set(out, pages, SimConfig(**kw), seed, prefix)
    print(f"wrote {len(paths)} pages to {out}")


if __name__ == "__main__":
    main()
