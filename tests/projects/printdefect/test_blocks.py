"""Blockwise statistics (Eq. 1.1–1.6), candidate selection and ROI merging against straightforward loops."""

import numpy as np
import pytest
import torch

from projects.printdefect.blocks import dde_baseline, find_candidates, grid_stats, merge_boxes
from tests.helpers import torch_threads


def reference_block(lab: np.ndarray, mask: np.ndarray, y0: int, x0: int, b: int) -> dict[str, float] | None:
    """Eq. 1.1–1.6 for one block, written out with plain float64 numpy over the unmasked pixels."""
    px = lab[y0:y0 + b, x0:x0 + b].astype(np.float64)[mask[y0:y0 + b, x0:x0 + b]]
    if len(px) < 2:
        return None
    mean = px.mean(0)
    de = np.sqrt(((px - mean) ** 2).sum(1))
    dl = np.abs(px[:, 0] - mean[0])
    return {"mean_L": mean[0], "mean_a": mean[1], "mean_b": mean[2], "MDE": de.mean(), "DDE": de.std(ddof=1),
            "MDL": dl.mean(), "DDL": dl.std(ddof=1), "n_valid": float(len(px))}



@pytest.fixture(scope="module")
def page():
    rng = np.random.default_rng(3)
    h, w = 97, 131
    lab = np.empty((h, w, 3), np.float32)
    lab[..., 0] = 60 + rng.normal(0, 1.0, (h, w))
    lab[..., 1] = -20 + rng.normal(0, 0.5, (h, w))
    lab[..., 2] = 10 + rng.normal(0, 0.5, (h, w))
    lab[40:46, 70:77, 0] += 5                        # a light spot
    lab[10:14, 20:23, 0] -= 6                         # a dark spot
    mask = np.ones((h, w), bool)
    mask[:, :9] = False                              # a margin
    mask[60:80, 30:60] = False                       # a barcode
    return lab, mask


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tile_pixels", [None, 800])
@pytest.mark.parametrize("offset", [0, 7])
def test_grid_stats_equal_per_block_loop(page, offset, tile_pixels, threads):
    """Both paths: the compiled CPU kernel (tile_pixels None, block rows split over 1 or 2 threads) and the tensor
    path of other devices (tiles of whole blocks, here with column chunks: 800 px < one block row)."""
    lab, mask = page
    b = 19
    with torch_threads(threads):
        g = grid_stats(torch.from_numpy(lab), torch.from_numpy(mask), b, offset, min_valid=0.5,
                       tile_pixels=tile_pixels)
    rows, cols = (lab.shape[0] - offset) // b, (lab.shape[1] - offset) // b
    assert g.shape == (rows, cols)
    for r in range(rows):
        for c in range(cols):
            ref = reference_block(lab, mask, offset + r * b, offset + c * b, b)
            valid = ref is not None and ref["n_valid"] >= 0.5 * b * b
            assert g.valid[r, c] == valid
            if not valid:
                assert np.isnan(g.stats["DDE"][r, c])
                continue
            for k, v in ref.items():
                assert g.stats[k][r, c] == pytest.approx(v, rel=1e-4, abs=1e-4), (k, r, c)


def test_baseline_is_windowed_nanmedian():
    rng = np.random.default_rng(0)
    dde = rng.random((6, 9))
    dde[2, 3] = np.nan
    base = dde_baseline(dde, 3)
    for r in range(6):
        for c in range(9):
            win = dde[max(0, r - 1):r + 2, max(0, c - 1):c + 2]
            assert base[r, c] == pytest.approx(np.nanmedian(win))
    assert np.allclose(dde_baseline(dde, 0), np.nanmedian(dde))


def test_candidates_and_roi_match_loop(page):
    lab, mask = page
    b, shift, low, high, win = 19, 9, 0.3, 2.0, 3
    cand = find_candidates(torch.from_numpy(lab), torch.from_numpy(mask), b, shift, 0.5, low, high, win)
    expected = []
    for gi, off in enumerate((0, shift)):
        rows, cols = (lab.shape[0] - off) // b, (lab.shape[1] - off) // b
        dde = np.full((rows, cols), np.nan)
        for r in range(rows):
            for c in range(cols):
                ref = reference_block(lab, mask, off + r * b, off + c * b, b)
                if ref is not None and ref["n_valid"] >= 0.5 * b * b:
                    dde[r, c] = ref["DDE"]
        for r in range(rows):
            for c in range(cols):
                nb = dde[max(0, r - 1):r + 2, max(0, c - 1):c + 2]
                if not np.isnan(dde[r, c]) and low <= dde[r, c] - np.nanmedian(nb) <= high:
                    expected.append((gi, r, c))
    got = sorted(zip(cand.grid[cand.candidate], cand.row[cand.candidate], cand.col[cand.candidate]))
    assert got == sorted(expected) and len(got) >= 2
    # both planted spots lie inside some ROI
    for y, x in ((43, 73), (12, 21)):
        assert any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in cand.roi_boxes)


def test_merge_boxes_matches_pixel_connected_components():
    import cv2

    rng = np.random.default_rng(1)
    boxes = []
    for _ in range(25):
        x0, y0 = rng.integers(0, 180, 2)
        boxes.append((x0, y0, x0 + rng.integers(3, 20), y0 + rng.integers(3, 20)))
    boxes = np.array(boxes)
    labels, merged = merge_boxes(boxes)
    canvas = np.zeros((220, 220), np.uint8)
    for x0, y0, x1, y1 in boxes:
        canvas[y0:y1, x0:x1] = 1
    n, lab = cv2.connectedComponents(canvas, connectivity=8)
    # boxes in the same pixel component ⇔ same label
    comp = np.array([lab[y0, x0] for x0, y0, _, _ in boxes])
    assert len(merged) == n - 1
    assert all((labels == labels[i]).tolist() == (comp == comp[i]).tolist() for i in range(len(boxes)))
    for k, (x0, y0, x1, y1) in enumerate(merged):
        ys, xs = np.nonzero(lab == comp[labels == k][0])
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_without_numba_the_tensor_paths_give_the_same_page(page, monkeypatch, tmp_path):
    """A platform without numba: the page reader defers to OpenCV and the block statistics use tensor tiles."""
    import sys

    from projects.printdefect.page import read_page, write_page
    from projects.printdefect.png import read_png

    lab, mask = page
    ref = grid_stats(torch.from_numpy(lab), torch.from_numpy(mask), 19, 7)
    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    write_page(tmp_path / "p.png", rgb, mask[:40, :50], 600)
    monkeypatch.setitem(sys.modules, "projects.printdefect.kernels", None)     # import fails
    assert read_png(tmp_path / "p.png") is None
    pg = read_page(tmp_path / "p.png")
    assert np.array_equal(pg.rgb, rgb) and np.array_equal(pg.mask, mask[:40, :50]) and pg.dpi == 600
    g = grid_stats(torch.from_numpy(lab), torch.from_numpy(mask), 19, 7)
    assert np.array_equal(g.valid, ref.valid)
    np.testing.assert_allclose(g.stats["DDE"], ref.stats["DDE"], rtol=1e-4, atol=1e-5)
