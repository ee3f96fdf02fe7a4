"""The blockwise local-defect detector of Fig. 1.2 as one ``nn.Module`` (``model.net``).

preprocess (Sec. 1.2.1) → both block grids and candidate selection (Sec. 1.2.2) → defect features in the candidate
blocks → the cost-sensitive decision tree (held as tensors, :class:`~projects.printdefect.tree.TreeState`). Sizes are
given at 600 dpi and scaled with each page's dpi.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from projects.printdefect.blocks import find_candidates
from projects.printdefect.features import FEATURES, defect_features, feature_matrix
from projects.printdefect.page import preprocess, scaled
from projects.printdefect.tree import TreeState
from shared.errors import UserError

TABLE_FLOATS = ("size", "major", "minor", "severity", "contrast", "mean_contrast", "texture", "excess", "cx", "cy",
                "dx0", "dy0", "dx1", "dy1")


class BlockwiseDetector(nn.Module):
    """Candidate blocks + defect features + decision tree for one page at a time.

    Args (paper values at 600 dpi): ``block`` 75 px, ``shift`` 35 px, descreening ``descreen_size`` 12 /
    ``descreen_sigma`` 2, ``dde_low`` 0.3 / ``dde_high`` 2 (footnote 1; ``None``: no upper limit), ``peak_low``
    (ΔE; ``None``: off) a second candidate rule on the baseline-removed peak ΔE of a block, ``baseline_window``
    blocks for the baselines (0 = page median), ``min_valid`` fraction of unmasked pixels a block needs,
    ``channel`` L or dE and ``method`` valley, otsu or fwhm for the defect mask (Eq. 1.7–1.8, Fig. 1.8),
    ``features`` the tree's inputs (default: the chapter's 7), ``min_contrast`` (ΔE; ``None``: off) the peak
    contrast a candidate's defect mask must reach to stay a candidate, ``min_area_mm2`` (``None``: off) the area its
    defect mask must reach (a visible defect is ≥ 0.05 mm²; a stray toner or dust speck is smaller), ``backend``
    auto/opencv/torch.
    """

    def __init__(self, block: int = 75, shift: int = 35, descreen_size: int = 12, descreen_sigma: float = 2.0,
                 dde_low: float = 0.3, dde_high: float | None = 2.0, baseline_window: int = 7, min_valid: float = 0.5,
                 channel: str = "L", method: str = "valley", levels: int = 256, backend: str = "auto",
                 peak_low: float | None = None, features: list[str] | tuple[str, ...] = FEATURES,
                 min_contrast: float | None = None, min_area_mm2: float | None = None) -> None:
        super().__init__()
        if channel not in ("L", "dE") or method not in ("valley", "otsu", "fwhm"):
            raise UserError(f"channel must be L or dE and method valley, otsu or fwhm (got {channel}, {method})")
        from projects.printdefect.features import ALL_FEATURES

        bad = [f for f in features if f not in ALL_FEATURES]
        if bad or not features:
            raise UserError(f"unknown tree features {bad}: choose from {', '.join(ALL_FEATURES)}")
        self.block, self.shift = block, shift
        self.descreen_size, self.descreen_sigma = descreen_size, descreen_sigma
        self.dde_low, self.dde_high, self.baseline_window = dde_low, dde_high, baseline_window
        self.peak_low, self.min_contrast, self.min_area_mm2 = peak_low, min_contrast, min_area_mm2
        self.min_valid, self.channel, self.method, self.levels = min_valid, channel, method, levels
        self.backend = backend
        self.features = tuple(features)
        self.tree = TreeState(len(self.features))

    def sizes(self, dpi: float) -> tuple[int, int]:
        """Block size and grid shift at ``dpi``."""
        return max(2, scaled(self.block, dpi)), scaled(self.shift, dpi)

    def analyse(self, rgb: np.ndarray | Tensor, mask: np.ndarray | Tensor, dpi: float) -> dict[str, np.ndarray]:
        """The per-block table of both grids: position, block statistics (Eq. 1.1–1.6), candidate flag, ROI and —
        for candidates — the defect features (NaN elsewhere)."""
        b, s = self.sizes(dpi)
        h, w = rgb.shape[:2]
        if h < b or w < b:
            raise UserError(f"page {w}x{h} px is smaller than one {b}x{b} block at {dpi:g} dpi")
        rgb_t = torch.as_tensor(rgb)
        lab = preprocess(rgb_t, dpi, self.descreen_size, self.descreen_sigma, self.backend)
        m = torch.as_tensor(mask, device=lab.device).bool()
        c = find_candidates(lab, m, b, s, self.min_valid, self.dde_low, self.dde_high, self.baseline_window,
                            self.peak_low)
        table: dict[str, np.ndarray] = {
            "grid": c.grid, "row": c.row, "col": c.col,
            "x0": c.boxes[:, 0], "y0": c.boxes[:, 1], "x1": c.boxes[:, 2], "y1": c.boxes[:, 3],
            **c.stats, "valid": c.valid, "candidate": c.candidate, "roi": c.roi,
        }
        idx = np.nonzero(c.candidate)[0]
        f = defect_features(lab, m, c.boxes[idx], b, self.channel, self.method, self.levels)
        for k in TABLE_FLOATS:
            col = np.full(len(c), np.nan)
            col[idx] = f[k]
            table[k] = col
        drop = np.zeros(len(idx), bool)
        if self.min_contrast is not None:      # a defect a person sees has a peak ΔE of about 5 and more
            drop |= ~(f["contrast"] >= self.min_contrast)
        if self.min_area_mm2 is not None:      # … and covers 0.05 mm² and more
            drop |= ~(f["size"] * (25.4 / dpi) ** 2 >= self.min_area_mm2)
        if drop.any():
            table["candidate"] = table["candidate"].copy()
            table["candidate"][idx[drop]] = False
        light = np.zeros(len(c), bool)
        light[idx] = f["light"]
        table["light"] = light
        table["block"] = np.full(len(c), b)
        table["dpi"] = np.full(len(c), float(dpi))
        return table

    def classify(self, table: dict[str, np.ndarray]) -> np.ndarray:
        """Decision-tree verdict (1 = visible local defect) for every block; non-candidates are 0."""
        pred = np.zeros(len(table["grid"]), np.int64)
        idx = np.nonzero(table["candidate"])[0]
        if len(idx):
            if not self.tree.fitted:
                raise UserError("the decision tree is not trained: pass ckpt_path=<a trained checkpoint>")
            pred[idx] = self.tree.predict(self.feature_matrix({k: v[idx] for k, v in table.items()}))
        return pred

    def feature_matrix(self, table: dict[str, np.ndarray]) -> np.ndarray:
        """This detector's tree inputs (``features``) of the rows of ``table``."""
        return feature_matrix(table, self.features)

    def forward(self, rgb: np.ndarray | Tensor, mask: np.ndarray | Tensor, dpi: float) -> dict[str, np.ndarray]:
        table = self.analyse(rgb, mask, dpi)
        table["pred"] = self.classify(table)
        return table
