"""Defect features inside candidate blocks (Sec. "Features of Local Defects", Eq. 1.7–1.8) and the per-block
feature table of Sec. "Blockwise Dataset". Everything is batched over the candidate blocks.

Inside each candidate block the input (L* or ΔE, over the unmasked pixels) is quantised to ``levels`` grey levels
over the block's own range and split by the valley-emphasis threshold (Eq. 1.8; Otsu, Eq. 1.7, as the alternative).
With ΔE the defect is the high-ΔE class; with L* the defect is the smaller of the two classes (a spot is a minority
of the block's pixels). Attributes: size (pixels), light/dark (defect mean L* above/below the block mean), major and
minor axis of the equivalent ellipse (4·√λ of the pixel-coordinate covariance, the scikit-image convention) and
severity = Σ_defect ΔE / Σ_background ΔE (∞ when the background sum is 0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

FEATURES = ("MDL", "DDL", "DDE", "size", "major", "minor", "severity")   # the 7 decision-tree inputs
SEVERITY_CAP = 1.0e6                                                      # ∞ severities enter the tree as this


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


def defect_features(lab: Tensor, mask: Tensor, boxes: np.ndarray, block: int, channel: str = "L",
                    method: str = "valley", levels: int = 256) -> dict[str, np.ndarray]:
    """Defect attributes of the blocks at ``boxes`` (x0, y0, x1, y1 with x1 − x0 = y1 − y0 = ``block``).

    Returns arrays of length N: size, light (bool), major, minor, severity, the page coordinates (cx, cy) of the
    defect centroid (NaN when the defect is empty) and the defect pixels' box dx0, dy0, dx1, dy1 (−1 when empty).
    """
    if channel not in ("L", "dE"):
        raise ValueError(f"channel must be 'L' or 'dE', got {channel!r}")
    if method not in ("valley", "otsu"):
        raise ValueError(f"method must be 'valley' or 'otsu', got {method!r}")
    n = len(boxes)
    keys = ("size", "light", "major", "minor", "severity", "cx", "cy", "dx0", "dy0", "dx1", "dy1")
    if n == 0:
        return {k: np.zeros(0, bool if k == "light" else np.float64) for k in keys}
    x = _patches(lab, boxes, block).double()                      # N×B×B×3
    m = _patches(mask, boxes, block)                              # N×B×B
    mf = m.double()
    cnt = mf.sum((1, 2)).clamp_min(1.0)
    mean = (x * mf[..., None]).sum((1, 2)) / cnt[:, None]
    de = (x - mean[:, None, None]).square().sum(-1).sqrt()        # ΔE, Eq. 1.1
    v = x[..., 0] if channel == "L" else de
    big = torch.finfo(v.dtype).max
    vmin = torch.where(m, v, big).amin((1, 2))
    vmax = torch.where(m, v, -big).amax((1, 2))
    span = (vmax - vmin).clamp_min(1e-12)
    q = ((v - vmin[:, None, None]) / span[:, None, None] * (levels - 1) + 0.5).floor().long().clamp(0, levels - 1)
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
    df = d.double()
    size = df.sum((1, 2))
    bg = de * (mf - df)
    with np.errstate(divide="ignore", invalid="ignore"):
        sev = ((de * df).sum((1, 2)) / bg.sum((1, 2))).cpu().numpy()
    sev = np.where(size.cpu().numpy() > 0, sev, 0.0)
    dmean_l = (x[..., 0] * df).sum((1, 2)) / size.clamp_min(1.0)
    light = (dmean_l > mean[:, 0]).cpu().numpy() & (size.cpu().numpy() > 0)
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
    empty = size.cpu().numpy() == 0
    b = np.asarray(boxes)
    rows_any, cols_any = d.any(2).cpu().numpy(), d.any(1).cpu().numpy()
    first_r, last_r = rows_any.argmax(1), block - 1 - rows_any[:, ::-1].argmax(1)
    first_c, last_c = cols_any.argmax(1), block - 1 - cols_any[:, ::-1].argmax(1)
    dbox = np.stack([b[:, 0] + first_c, b[:, 1] + first_r, b[:, 0] + last_c + 1, b[:, 1] + last_r + 1], 1)
    dbox = np.where(empty[:, None], -1, dbox)
    return {
        "dx0": dbox[:, 0], "dy0": dbox[:, 1], "dx1": dbox[:, 2], "dy1": dbox[:, 3],
        "size": size.cpu().numpy(),
        "light": light,
        "major": np.where(empty, 0.0, major.cpu().numpy()),
        "minor": np.where(empty, 0.0, minor.cpu().numpy()),
        "severity": sev,
        "cx": np.where(empty, np.nan, b[:, 0] + cbar.cpu().numpy()),
        "cy": np.where(empty, np.nan, b[:, 1] + rbar.cpu().numpy()),
    }


def feature_matrix(table: dict[str, np.ndarray]) -> np.ndarray:
    """The 7 tree inputs (MDL, DDL, DDE, size, major, minor, severity) as float64 N×7; ∞ severity is capped."""
    x = np.stack([np.asarray(table[k], np.float64) for k in FEATURES], 1)
    return np.nan_to_num(x, nan=0.0, posinf=SEVERITY_CAP, neginf=-SEVERITY_CAP)


def block_labels(boxes: np.ndarray, defects: list[dict], min_fraction: float = 0.5) -> np.ndarray:
    """Ground truth per block from the page's defect list (``bbox`` = x0, y0, x1, y1; ``visible``): 1 when the block
    holds ≥ ``min_fraction`` of a visible defect's box, −1 (ambiguous, left out of fitting and scoring) when it
    holds a smaller part of one, else 0."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    vis = np.array([d["bbox"] for d in defects if d.get("visible")], np.float64).reshape(-1, 4)
    if len(vis) == 0 or len(boxes) == 0:
        return np.zeros(len(boxes), np.int64)
    ix = np.clip(np.minimum(boxes[:, None, 2], vis[None, :, 2]) - np.maximum(boxes[:, None, 0], vis[None, :, 0]), 0,
                 None)
    iy = np.clip(np.minimum(boxes[:, None, 3], vis[None, :, 3]) - np.maximum(boxes[:, None, 1], vis[None, :, 1]), 0,
                 None)
    area = np.maximum((vis[:, 2] - vis[:, 0]) * (vis[:, 3] - vis[:, 1]), 1e-9)
    frac = (ix * iy / area[None]).max(1)
    return np.where(frac >= min_fraction, 1, np.where(frac > 0, -1, 0)).astype(np.int64)
