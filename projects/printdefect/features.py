"""Defect features inside candidate blocks (Sec. "Features of Local Defects", Eq. 1.7–1.8) and the per-block
feature table of Sec. "Blockwise Dataset". Everything is batched over the candidate blocks.

The defect mask of a candidate block (``method``):

* ``valley`` / ``otsu`` (the chapter, Eq. 1.8 / 1.7): the input (L* or ΔE, over the unmasked pixels) is quantised to
  ``levels`` grey levels over the block's own range and split by the threshold. With ΔE the defect is the high-ΔE
  class; with L* the defect is the smaller of the two classes (a spot is a minority of the block's pixels).
* ``fwhm`` (the chapter's Fig. 1.8 comparison, FWHM of the deviation): the signed contrast of every pixel against
  the block's *median* colour (+ΔE where lighter, −ΔE where darker); the defect is the 8-connected region around the
  lighter or the darker peak that reaches half of it, whichever holds more contrast (Σ|ΔE|). Issue 19: on textured
  tints (coarse or stochastic screens, noisy scanners) the valley-emphasis split of a block with a small spot
  follows the texture, not the spot.

Attributes (all methods): size (pixels), light/dark, major and minor axis of the equivalent ellipse (4·√λ of the
pixel-coordinate covariance, the scikit-image convention), severity = Σ_defect ΔE / Σ_background ΔE (ΔE of
Eq. 1.1; ∞ when the background sum is 0), and — beyond the chapter — ``contrast`` (the defect's peak ΔE from the
block's median colour), ``mean_contrast`` (its mean) and ``texture`` (the median ΔE of the other pixels).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

FEATURES = ("MDL", "DDL", "DDE", "size", "major", "minor", "severity")   # the chapter's 7 decision-tree inputs
EXTRA_FEATURES = ("contrast", "mean_contrast", "texture", "excess", "dDDE", "dPDE")  # issue 19 (README)
ALL_FEATURES = FEATURES + EXTRA_FEATURES
SEVERITY_CAP = 1.0e6                                                      # ∞ severities enter the tree as this
PER_600DPI = {"size": 2, "major": 1, "minor": 1}      # features in pixels, scaled to 600 dpi (power of the scale)


def _between_class(hist: np.ndarray) -> np.ndarray:
    """ω1μ1² + ω2μ2² (Eq. 1.7) for every split level t (class 1 = levels ≤ t); rows are histograms."""
    hist = np.atleast_2d(np.asarray(hist, np.float64))
    p = hist / np.maximum(hist.sum(-1, keepdims=True), 1e-300)
    levels = np.arange(hist.shape[-1], dtype=np.float64)
    w1 = np.cumsum(p, -1)
    m1 = np.cumsum(p * levels, -1)
    w2, m2 = 1.0 - w1, m1[..., -1:] - m1
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(w1 > 1e-12, m1**2 / w1, 0.0)           # ω1μ1² = (Σ i p_i)² / ω1
        t2 = np.where(w2 > 1e-12, m2**2 / w2, 0.0)
    return t1 + t2, p


def otsu_threshold(hist: np.ndarray) -> np.ndarray:
    """Eq. 1.7: the level t maximising the between-class term (first maximum); one per histogram row."""
    obj, _ = _between_class(hist)
    return obj.argmax(-1)


def valley_emphasis_threshold(hist: np.ndarray) -> np.ndarray:
    """Eq. 1.8 (Ng's valley emphasis): argmax_t (1 − p(t)) · (ω1μ1² + ω2μ2²); one per histogram row."""
    obj, p = _between_class(hist)
    return ((1.0 - p) * obj).argmax(-1)


def _patches(img: Tensor, boxes: np.ndarray, block: int) -> Tensor:
    """Gather the ``block``×``block`` patches at ``boxes`` (x0, y0, …) → N×B×B×… (one indexing op, no loop)."""
    ar = torch.arange(block, device=img.device)
    b = torch.as_tensor(boxes, device=img.device, dtype=torch.long)
    ys = b[:, 1, None] + ar
    xs = b[:, 0, None] + ar
    return img[ys[:, :, None], xs[:, None, :]]


def _nanmedian(v: Tensor, keep: Tensor) -> Tensor:
    """Per-row median of ``v`` (N×P[×C]) over the positions where ``keep`` (N×P) holds (NaN for an empty row)."""
    w = torch.where(keep[..., None] if v.dim() == 3 else keep, v, torch.full_like(v, float("nan")))
    lo = torch.nanmedian(w, dim=1).values
    hi = -torch.nanmedian(-w, dim=1).values        # the mean of the two middle values, like np.nanmedian
    return (lo + hi) / 2


def defect_features(lab: Tensor, mask: Tensor, boxes: np.ndarray, block: int, channel: str = "L",
                    method: str = "valley", levels: int = 256) -> dict[str, np.ndarray]:
    """Defect attributes of the blocks at ``boxes`` (x0, y0, x1, y1 with x1 − x0 = y1 − y0 = ``block``).

    Returns arrays of length N: size, light (bool), major, minor, severity, contrast, mean_contrast, texture, the
    page coordinates (cx, cy) of the defect centroid (NaN when the defect is empty) and the defect pixels' box dx0,
    dy0, dx1, dy1 (−1 when empty).
    """
    if channel not in ("L", "dE"):
        raise ValueError(f"channel must be 'L' or 'dE', got {channel!r}")
    if method not in ("valley", "otsu", "fwhm"):
        raise ValueError(f"method must be 'valley', 'otsu' or 'fwhm', got {method!r}")
    n = len(boxes)
    keys = ("size", "light", "major", "minor", "severity", "contrast", "mean_contrast", "texture", "excess", "cx",
            "cy", "dx0", "dy0", "dx1", "dy1")
    if n == 0:
        return {k: np.zeros(0, bool if k == "light" else np.float64) for k in keys}
    x = _patches(lab, boxes, block).double()                      # N×B×B×3
    m = _patches(mask, boxes, block)                              # N×B×B
    mf = m.double()
    cnt = mf.sum((1, 2)).clamp_min(1.0)
    mean = (x * mf[..., None]).sum((1, 2)) / cnt[:, None]
    de = (x - mean[:, None, None]).square().sum(-1).sqrt()        # ΔE, Eq. 1.1
    bg = _nanmedian(x.reshape(n, -1, 3), m.reshape(n, -1))        # the block's median colour
    bg = torch.nan_to_num(bg)
    de_bg = (x - bg[:, None, None]).square().sum(-1).sqrt()
    if method == "fwhm":
        from projects.printdefect.kernels import fwhm_masks, run_split

        signed = torch.where(x[..., 0] >= bg[:, None, None, 0], de_bg, -de_bg).float().numpy()
        d_np = np.zeros((n, block, block), np.bool_)
        info = np.zeros((n, 4), np.float64)
        run_split(fwhm_masks, n, np.ascontiguousarray(signed), np.ascontiguousarray(m.numpy()), d_np, info)
        d = torch.from_numpy(d_np)
        light_np = info[:, 0] > 0.5
    else:
        v = x[..., 0] if channel == "L" else de
        big = torch.finfo(v.dtype).max
        vmin = torch.where(m, v, big).amin((1, 2))
        vmax = torch.where(m, v, -big).amax((1, 2))
        span = (vmax - vmin).clamp_min(1e-12)
        q = ((v - vmin[:, None, None]) / span[:, None, None] * (levels - 1) + 0.5).floor().long()
        q = q.clamp(0, levels - 1)
        flat = (torch.arange(n, device=q.device)[:, None, None] * levels + q)[m]
        hist = torch.bincount(flat, minlength=n * levels).reshape(n, levels).cpu().numpy()
        thr = valley_emphasis_threshold(hist) if method == "valley" else otsu_threshold(hist)
        t = torch.as_tensor(thr, device=q.device)[:, None, None]
        high = (q > t) & m
        if channel == "dE":
            d = high
        else:
            low = (q <= t) & m
            high_is_minor = high.sum((1, 2)) <= low.sum((1, 2))
            d = torch.where(high_is_minor[:, None, None], high, low)
        light_np = None
    df = d.double()
    size = df.sum((1, 2))
    size_np = size.cpu().numpy()
    bgsum = de * (mf - df)
    with np.errstate(divide="ignore", invalid="ignore"):
        sev = ((de * df).sum((1, 2)) / bgsum.sum((1, 2))).cpu().numpy()
    sev = np.where(size_np > 0, sev, 0.0)
    if light_np is None:
        dmean_l = (x[..., 0] * df).sum((1, 2)) / size.clamp_min(1.0)
        light_np = (dmean_l > mean[:, 0]).cpu().numpy()
    light = light_np & (size_np > 0)
    contrast = torch.where(d, de_bg, torch.zeros_like(de_bg)).amax((1, 2)).cpu().numpy()
    mean_contrast = ((de_bg * df).sum((1, 2)) / size.clamp_min(1.0)).cpu().numpy()
    texture = torch.nan_to_num(_nanmedian(de_bg.reshape(n, -1), (m & ~d).reshape(n, -1))).cpu().numpy()
    ar = torch.arange(block, device=x.device, dtype=torch.float64)
    rr, cc = ar[None, :, None], ar[None, None, :]
    s = size.clamp_min(1.0)
    rbar = (df * rr).sum((1, 2)) / s
    cbar = (df * cc).sum((1, 2)) / s
    vr = (df * (rr - rbar[:, None, None]) ** 2).sum((1, 2)) / s
    vc = (df * (cc - cbar[:, None, None]) ** 2).sum((1, 2)) / s
    cv = (df * (rr - rbar[:, None, None]) * (cc - cbar[:, None, None])).sum((1, 2)) / s
    half = (vr + vc) / 2
    root = (((vr - vc) / 2) ** 2 + cv**2).sqrt()
    major = 4 * (half + root).clamp_min(0).sqrt()
    minor = 4 * (half - root).clamp_min(0).sqrt()
    empty = size_np == 0
    b = np.asarray(boxes)
    rows_any, cols_any = d.any(2).cpu().numpy(), d.any(1).cpu().numpy()
    first_r, last_r = rows_any.argmax(1), block - 1 - rows_any[:, ::-1].argmax(1)
    first_c, last_c = cols_any.argmax(1), block - 1 - cols_any[:, ::-1].argmax(1)
    dbox = np.stack([b[:, 0] + first_c, b[:, 1] + first_r, b[:, 0] + last_c + 1, b[:, 1] + last_r + 1], 1)
    dbox = np.where(empty[:, None], -1, dbox)
    return {
        "dx0": dbox[:, 0], "dy0": dbox[:, 1], "dx1": dbox[:, 2], "dy1": dbox[:, 3],
        "size": size_np,
        "light": light,
        "major": np.where(empty, 0.0, major.cpu().numpy()),
        "minor": np.where(empty, 0.0, minor.cpu().numpy()),
        "severity": sev,
        "contrast": contrast, "mean_contrast": mean_contrast, "texture": texture,
        "excess": mean_contrast - 3.0 * texture,
        "cx": np.where(empty, np.nan, b[:, 0] + cbar.cpu().numpy()),
        "cy": np.where(empty, np.nan, b[:, 1] + rbar.cpu().numpy()),
    }


def feature_matrix(table: dict[str, np.ndarray], names: tuple[str, ...] | list[str] = FEATURES) -> np.ndarray:
    """The tree inputs ``names`` (default: the chapter's MDL, DDL, DDE, size, major, minor, severity) as float64
    N×len(names); sizes in pixels are given at 600 dpi (``table["dpi"]`` when present); ∞ severity is capped."""
    unknown = [k for k in names if k not in ALL_FEATURES]
    if unknown:
        raise ValueError(f"unknown tree features {unknown}: choose from {', '.join(ALL_FEATURES)}")
    n = len(next(iter(table.values()))) if table else 0
    scale = 600.0 / np.asarray(table["dpi"], np.float64) if "dpi" in table else np.ones(n)
    cols = [np.asarray(table[k], np.float64) * scale ** PER_600DPI.get(k, 0) for k in names]
    x = np.stack(cols, 1) if cols else np.zeros((n, 0))
    return np.nan_to_num(x, nan=0.0, posinf=SEVERITY_CAP, neginf=-SEVERITY_CAP)


def block_labels(boxes: np.ndarray, defects: list[dict], min_fraction: float = 0.5,
                 faint: str = "negative") -> np.ndarray:
    """Ground truth per block from the page's defect list (``bbox`` = x0, y0, x1, y1; ``visible``): 1 when the block
    holds ≥ ``min_fraction`` of a visible defect's box, −1 (ambiguous, left out of fitting and scoring) when it
    holds a smaller part of one, else 0. ``faint="ignore"``: a block holding any part of a faint defect (a gray spot /
    pinhole / solid spot below the visibility thresholds, ``faint``) is ambiguous too, unless it is positive."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)

    def share(kind: str) -> np.ndarray:
        sel = [d["bbox"] for d in defects if (d.get("visible") if kind == "visible" else d.get("faint"))]
        ref = np.array(sel, np.float64).reshape(-1, 4)
        if len(ref) == 0 or len(boxes) == 0:
            return np.zeros(len(boxes))
        ix = np.clip(np.minimum(boxes[:, None, 2], ref[None, :, 2]) - np.maximum(boxes[:, None, 0], ref[None, :, 0]),
                     0, None)
        iy = np.clip(np.minimum(boxes[:, None, 3], ref[None, :, 3]) - np.maximum(boxes[:, None, 1], ref[None, :, 1]),
                     0, None)
        area = np.maximum((ref[:, 2] - ref[:, 0]) * (ref[:, 3] - ref[:, 1]), 1e-9)
        return (ix * iy / area[None]).max(1)

    if faint not in ("negative", "ignore"):
        raise ValueError(f"faint must be 'negative' or 'ignore', got {faint!r}")
    frac = share("visible")
    out = np.where(frac >= min_fraction, 1, np.where(frac > 0, -1, 0)).astype(np.int64)
    if faint == "ignore":
        out[(out == 0) & (share("faint") > 0)] = -1
    return out
