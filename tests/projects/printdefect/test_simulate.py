"""The simulator's ground truth matches what it drew; masks cover barcode / fiducials / margins."""

import json

import numpy as np
import pytest

from projects.printdefect.page import read_page
from projects.printdefect.simulate import main, page_pixels, simulate_page
from tests.projects.printdefect.conftest import small_config


@pytest.fixture(scope="module")
def pair():
    cfg = small_config()
    rgb, mask, gt = simulate_page(cfg, seed=5)
    clean, mask0, gt0 = simulate_page(cfg, seed=5, with_defects=False)
    return cfg, rgb, mask, gt, clean, mask0, gt0


def test_defects_are_where_the_ground_truth_says(pair):
    cfg, rgb, mask, gt, clean, mask0, gt0 = pair
    assert np.array_equal(mask, mask0) and gt0["defects"] == [] and gt["regions"] == gt0["regions"]
    diff = np.abs(rgb.astype(int) - clean.astype(int)).max(-1) > 0
    covered = np.zeros_like(diff)
    halo = 4  # scanner blur σ = 1 px at 600 dpi
    for d in gt["defects"]:
        x0, y0, x1, y1 = d["bbox"]
        covered[max(0, y0 - halo):y1 + halo, max(0, x0 - halo):x1 + halo] = True
    assert diff.any() and not (diff & ~covered).any()          # nothing changed outside the drawn defects
    types = {d["type"] for d in gt["defects"]}
    assert {"gray_spot", "pinhole", "solid_spot", "speck", "scratch"} <= types
    for d in gt["defects"]:
        x0, y0, x1, y1 = d["bbox"]
        cx, cy = d["center"]
        assert x0 <= cx < x1 and y0 <= cy < y1
        region = gt["regions"][d["region"]]["box"]
        assert region[0] <= cx < region[2] and region[1] <= cy < region[3]
        assert mask[int(cy), int(cx)]                            # defects sit in the analysed area
        if d["visible"]:
            assert d["type"] in ("gray_spot", "pinhole", "solid_spot") and d["delta_e"] >= cfg.visible_delta_e
            win = (slice(y0, y1), slice(x0, x1))
            delta = rgb[win].astype(float).mean() - clean[win].astype(float).mean()
            assert (delta > 0) == (d["kind"] == "light"), d  # gray spots / pinholes lighter, solid spots darker
        else:
            assert d["type"] in ("speck", "scratch") or d["delta_e"] < cfg.visible_delta_e


def test_mask_excludes_margins_barcode_and_gaps(pair):
    cfg, rgb, mask, gt, *_ = pair
    w, h = page_pixels(cfg)
    assert mask.shape == (h, w)
    m = int(cfg.margin_mm * cfg.dpi / 25.4)
    assert not mask[:m].any() and not mask[-m:].any() and not mask[:, :m].any() and not mask[:, -m:].any()
    inside = np.zeros_like(mask)
    for r in gt["regions"]:
        x0, y0, x1, y1 = r["box"]
        inside[y0:y1, x0:x1] = True
    assert not (mask & ~inside).any() and mask.mean() > 0.3
    dark = rgb.mean(-1) < 100                                   # barcode bars and fiducials: black, outside
    assert (dark & ~inside).sum() > 500                         # the regions, hence masked


def test_cli_writes_pages_with_dpi_and_ground_truth(tmp_path, capsys):
    main([f"out={tmp_path}", "pages=1", "dpi=300", "size=[500,400]", "grid=[1,2]", "margin_mm=3", "barcode_mm=3",
          "seed=3"])
    page = read_page(tmp_path / "page_000.png")
    gt = json.loads((tmp_path / "page_000.json").read_text())
    assert page.dpi == 300 and page.rgb.shape == (400, 500, 3) and gt["dpi"] == 300 and len(gt["regions"]) == 2
    with pytest.raises(SystemExit):
        main([f"out={tmp_path}", "bogus=1"])
