"""Blockwise candidate selection (Sec. 1.2.2, Eq. 1.1–1.6, Fig. 1.6–1.7), vectorised over the whole page.

Per block j of a grid (block size B, origin ``offset``), over the unmasked pixels i only:
ΔE_ij = ‖Lab_ij − mean_j(Lab)‖ (1.1), MDE = mean ΔE (1.2), DDE = std ΔE with n−1 (1.3), and the same for
ΔL = |L*_ij − mean_j(L*)| (1.4–1.6). Blocks with fewer than ``min_valid`` × B² unmasked pixels are invalid. The DDE
baseline (a NaN-aware median over a ``baseline_window`` × ``baseline_window`` neighbourhood of blocks, or the page
median when the window is 0) is removed, and blocks with ``low ≤ DDE − baseline ≤ high`` are candidates (footnote 1:
0.3 and 2). The base grid and the grid shifted by ``shift`` pixels in x and y are merged with connected components
into regions of interest (ROI).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

STAT_NAMES = ("mean_L", "mean_a", "mean_b", "MDE", "DDE", "MDL", "DDL", "PDE", "n_valid")


@dataclass
class GridStats:
    """Per-block statistics of one grid: every field is a ``(rows, cols)`` array (NaN where invalid)."""

    offset: int
    block: int
    stats: dict[str, np.ndarray]
    valid: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.valid.shape


def grid_shape(height: int, width: int, block: int, offset: int) -> tuple[int, int]:
    """Number of whole blocks (rows, cols) of a grid whose origin is (offset, offset)."""
    return max(0, (height - offset) // block), max(0, (width - offset) // block)


def _strip_stats(lab: Tensor, mask: Tensor, block: int) -> dict[str, Tensor]:
    """Eq. 1.1–1.6 for a strip of whole blocks: ``lab`` (r·B)×(c·B)×3, ``mask`` (r·B)×(c·B) → (r, c) tensors.

    One pass over the pixels: the block mean, then ΔE and ΔL per pixel and their masked sums and sums of squares;
    the standard deviations (n − 1) are finished in float64 from those sums.
    """
    h, w = mask.shape
    r, c = h // block, w // block
    x = lab.reshape(r, block, c, block, 3).permute(0, 2, 1, 3, 4).reshape(r * c, block * block, 3)
    if bool(mask.all()):  # no masked pixel in this tile: one-pass mean / std per block
        mean = x.mean(1)
        d = x - mean[:, None]
        out = {"mean_L": mean[:, 0], "mean_a": mean[:, 1], "mean_b": mean[:, 2],
               "n_valid": torch.full((r * c,), float(block * block), dtype=lab.dtype, device=lab.device)}
        de = torch.linalg.vector_norm(d, dim=-1)
        for name_m, name_d, v in (("MDE", "DDE", de), ("MDL", "DDL", d[..., 0].abs())):
            var, mu = torch.var_mean(v, dim=1, correction=1)                     # Eq. 1.2–1.3 / 1.5–1.6
            out[name_m], out[name_d] = mu, var.sqrt()
        out["PDE"] = de.amax(1)
        return {k: v.reshape(r, c) for k, v in out.items()}
    m = mask.reshape(r, block, c, block).permute(0, 2, 1, 3).reshape(r * c, block * block).to(lab.dtype)
    n = m.sum(1)
    safe = n.clamp_min(1.0)
    mean = torch.bmm(m[:, None, :], x)[:, 0] / safe[:, None]                      # block mean L*a*b*
    d = x - mean[:, None]
    de = torch.linalg.vector_norm(d, dim=-1)                                      # ΔE, Eq. 1.1
    dl = d[..., 0].abs_()                                                         # ΔL, Eq. 1.4
    out = {"mean_L": mean[:, 0], "mean_a": mean[:, 1], "mean_b": mean[:, 2], "n_valid": n,
           "PDE": (de * m).amax(1)}
    n64 = n.double()
    for name_m, name_d, v in (("MDE", "DDE", de), ("MDL", "DDL", dl)):
        s1 = (v * m).sum(1).double()
        s2 = (v * v * m).sum(1).double()
        mu = s1 / n64.clamp_min(1.0)                                              # Eq. 1.2 / 1.5
        var = (s2 - n64 * mu * mu).clamp_min(0.0) / (n64 - 1).clamp_min(1.0)      # Eq. 1.3 / 1.6
        out[name_m], out[name_d] = mu, var.sqrt()
    return {k: v.reshape(r, c) for k, v in out.items()}


def grid_stats(lab: Tensor, mask: Tensor, block: int, offset: int, min_valid: float = 0.5,
               tile_pixels: int | None = None) -> GridStats:
    """Eq. 1.1–1.6 for every block of the grid at ``offset``.

    On the CPU a compiled kernel (:func:`~projects.printdefect.kernels.block_stats_rows`) visits each block's pixels
    twice while they are in cache, the block rows split over torch's threads. On other devices the page is cut into
    tiles of whole blocks (``tile_pixels`` ≈ 2²⁴ pixels) evaluated with tensor ops (also the CPU path, in 2¹⁸-pixel
    tiles, where numba is not installed). Memory stays bounded either way.
    """
    h, w = mask.shape
    rows, cols = grid_shape(h, w, block, offset)
    kernel = None
    if lab.device.type == "cpu" and tile_pixels is None:
        try:
            from projects.printdefect.kernels import block_stats_rows as kernel
            from projects.printdefect.kernels import run_split
        except ImportError:  # no numba on this platform: tensor ops in cache-sized tiles
            tile_pixels = 1 << 18
    if kernel is not None:
        out = np.zeros((rows, cols, len(STAT_NAMES)), np.float64)
        if rows and cols:
            lab_np = np.ascontiguousarray(lab.numpy(), dtype=np.float32)
            run_split(kernel, rows, lab_np, mask.numpy().astype(np.bool_, copy=False), block, offset, out)
        stats = {k: out[..., i] for i, k in enumerate(STAT_NAMES)}
    else:
        stats = _tiled_stats(lab, mask, block, offset, rows, cols, tile_pixels or 1 << 24)
    area = block * block
    valid = stats["n_valid"] >= max(2.0, min_valid * area)
    for k in STAT_NAMES:
        if k != "n_valid":
            stats[k] = np.where(valid, stats[k], np.nan)
    return GridStats(offset, block, stats, valid)


def _tiled_stats(lab: Tensor, mask: Tensor, block: int, offset: int, rows: int, cols: int,
                 tile_pixels: int) -> dict[str, np.ndarray]:
    """The tensor-op path of :func:`grid_stats` (any device): tiles of whole blocks of about ``tile_pixels``."""
    area = block * block
    per_tile = max(1, tile_pixels // area)
    tr = max(1, min(rows, per_tile // max(1, cols)))          # whole block rows per tile when they fit …
    tc = cols if tr > 1 or per_tile >= cols else per_tile     # … else column chunks of one block row
    acc: dict[str, Tensor] = {k: torch.zeros(rows, cols, dtype=torch.float64, device=lab.device)
                              for k in STAT_NAMES}
    for r0 in range(0, rows, tr):
        r1 = min(rows, r0 + tr)
        for c0 in range(0, cols, max(1, tc)):
            c1 = min(cols, c0 + tc)
            ys = slice(offset + r0 * block, offset + r1 * block)
            xs = slice(offset + c0 * block, offset + c1 * block)
            part = _strip_stats(lab[ys, xs].float(), mask[ys, xs], block)
            for k in STAT_NAMES:
                acc[k][r0:r1, c0:c1] = part[k]
    return {k: v.cpu().numpy() for k, v in acc.items()}


def dde_baseline(dde: np.ndarray, window: int = 7) -> np.ndarray:
    """The DDE baseline of Fig. 1.7(b): NaN-aware median over a window×window neighbourhood of blocks (0: page
    median of the valid blocks)."""
    if dde.size == 0 or np.all(np.isnan(dde)):
        return np.full_like(dde, np.nan)
    if window <= 0:
        return np.full_like(dde, np.nanmedian(dde))
    r = window // 2
    t = torch.from_numpy(np.pad(dde, r, constant_values=np.nan))
    win = t.unfold(0, 2 * r + 1, 1).unfold(1, 2 * r + 1, 1)                       # (rows, cols, k, k)
    med = torch.nanmedian(win.reshape(*dde.shape, -1), dim=-1).values.numpy()
    # torch's nanmedian returns the lower of the two middle values; use the mean of both like np.nanmedian
    med_hi = -torch.nanmedian(-win.reshape(*dde.shape, -1), dim=-1).values.numpy()
    return (med + med_hi) / 2.0


def residuals(g: GridStats, window: int = 7) -> dict[str, np.ndarray]:
    """Baseline-removed DDE (Fig. 1.7b) and peak ΔE of every block of a grid (NaN where invalid)."""
    return {"dDDE": g.stats["DDE"] - dde_baseline(g.stats["DDE"], window),
            "dPDE": g.stats["PDE"] - dde_baseline(g.stats["PDE"], window)}


def select_candidates(g: GridStats, low: float = 0.3, high: float | None = 2.0, window: int = 7,
                      peak_low: float | None = None, res: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Fig. 1.7: valid blocks whose baseline-removed DDE lies in [low, high] (``high`` None: no upper limit) —
    or, with ``peak_low``, whose baseline-removed peak ΔE (PDE) reaches ``peak_low``. ``res``: the grid's
    :func:`residuals`, when already computed."""
    res = res if res is not None else residuals(g, window)
    with np.errstate(invalid="ignore"):
        sel = res["dDDE"] >= low
        if high is not None:
            sel &= res["dDDE"] <= high
        if peak_low is not None:
            sel |= res["dPDE"] >= peak_low
        return g.valid & sel


def block_boxes(g: GridStats, sel: np.ndarray) -> np.ndarray:
    """Pixel boxes (x0, y0, x1, y1; end exclusive) of the selected blocks of a grid, row-major order."""
    r, c = np.nonzero(sel)
    y0, x0 = g.offset + r * g.block, g.offset + c * g.block
    return np.stack([x0, y0, x0 + g.block, y0 + g.block], 1).astype(np.int64)


def merge_boxes(boxes: np.ndarray, gap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of boxes that overlap or touch (8-connectivity of their union, plus ``gap`` pixels):
    returns (component label per box, merged box per component)."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.int64)
    b = boxes.astype(np.int64)
    ox = (b[:, None, 0] <= b[None, :, 2] + gap) & (b[None, :, 0] <= b[:, None, 2] + gap)
    oy = (b[:, None, 1] <= b[None, :, 3] + gap) & (b[None, :, 1] <= b[:, None, 3] + gap)
    i, j = np.nonzero(ox & oy)
    ncomp, labels = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    order = np.argsort(labels, kind="stable")
    starts = np.r_[0, np.cumsum(np.bincount(labels, minlength=ncomp))[:-1]]
    sb = b[order]
    merged = np.stack([np.minimum.reduceat(sb[:, 0], starts), np.minimum.reduceat(sb[:, 1], starts),
                       np.maximum.reduceat(sb[:, 2], starts), np.maximum.reduceat(sb[:, 3], starts)], 1)
    return labels.astype(np.int64), merged


@dataclass
class Candidates:
    """Every block of both grids (``grid`` 0 = base, 1 = shifted) with its statistics and candidate flag, plus the
    ROI (merged candidate regions) each candidate belongs to (−1 for non-candidates)."""

    grid: np.ndarray
    row: np.ndarray
    col: np.ndarray
    boxes: np.ndarray
    stats: dict[str, np.ndarray]
    valid: np.ndarray
    candidate: np.ndarray
    roi: np.ndarray
    roi_boxes: np.ndarray
    block: int
    shift: int

    def __len__(self) -> int:
        return len(self.grid)


def find_candidates(lab: Tensor, mask: Tensor, block: int, shift: int, min_valid: float = 0.5, low: float = 0.3,
                    high: float | None = 2.0, window: int = 7, peak_low: float | None = None) -> Candidates:
    """Both grids (Fig. 1.6), candidate selection (Fig. 1.7) and the ROI by connected components. The block
    statistics include the residuals ``dDDE`` / ``dPDE`` (baseline removed)."""
    grids, rows, res = [], [], []
    for gi, off in enumerate((0, shift)):
        g = grid_stats(lab, mask, block, off, min_valid)
        res.append(residuals(g, window))
        sel = select_candidates(g, low, high, window, peak_low, res[-1])
        r, c = np.indices(g.shape)
        all_sel = np.ones(g.shape, bool)
        rows.append((np.full(r.size, gi), r.ravel(), c.ravel(), block_boxes(g, all_sel), sel.ravel(), g))
        grids.append(g)
    grid = np.concatenate([x[0] for x in rows])
    row = np.concatenate([x[1] for x in rows])
    col = np.concatenate([x[2] for x in rows])
    boxes = np.concatenate([x[3] for x in rows]).reshape(-1, 4)
    cand = np.concatenate([x[4] for x in rows]).astype(bool)
    stats = {k: np.concatenate([g.stats[k].ravel() for g in grids]) for k in STAT_NAMES}
    for k in ("dDDE", "dPDE"):
        stats[k] = np.concatenate([r[k].ravel() for r in res])
    valid = np.concatenate([g.valid.ravel() for g in grids])
    roi = np.full(len(grid), -1, np.int64)
    labels, roi_boxes = merge_boxes(boxes[cand])
    roi[cand] = labels
    return Candidates(grid, row, col, boxes, stats, valid, cand, roi, roi_boxes, block, shift)


def block_size_for(dpi: float, block_at_600: int = 75, shift_at_600: int = 35) -> tuple[int, int]:
    """Block size and grid shift scaled to the page dpi (75 and 35 px at 600 dpi)."""
    return max(2, int(round(block_at_600 * dpi / 600.0))), max(1, int(round(shift_at_600 * dpi / 600.0)))


