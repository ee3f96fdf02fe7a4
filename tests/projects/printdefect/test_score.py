"""Per-defect scoring (issue 19) against hand-made ground truth: hand-placed detection boxes, and a page built in
the test with known spots run through the detector."""

import math

import numpy as np
import pytest

from projects.printdefect.model import BlockwiseDetector
from projects.printdefect.output import detections
from projects.printdefect.score import match_page, summarize, tables
from tests.projects.printdefect.test_detector import accept_all


def gt(cx, cy, kind="light", typ="gray_spot", area=0.5, de=20.0, visible=True, faint=False):
    return {"center": [cx, cy], "kind": kind, "type": typ, "area_mm2": area, "delta_e": de, "visible": visible,
            "faint": faint}


def det(box, kind="light", center=None):
    return {"box": box, "kind": kind, "type": "gray_spot" if kind == "light" else "solid_spot",
            "center": center or [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]}


def test_match_page_by_hand():
    defects = [gt(100, 100), gt(300, 100, "dark", "solid_spot", area=0.07, de=6.0),
               gt(500, 100, area=2.5, de=45.0),                                   # missed
               gt(700, 100, typ="pinhole", de=3.0, visible=False, faint=True),    # faint: found, not counted
               {"center": [900, 100], "kind": "light", "type": "scratch", "visible": False, "delta_e": 9.0,
                "area_mm2": 0.1}]                                                 # distractor
    dets = [det([50, 50, 150, 150]),                      # finds the gray spot, right type
            det([250, 50, 350, 150], "light"),            # finds the solid spot, wrong type
            det([650, 50, 750, 150]),                     # on the faint pinhole
            det([850, 50, 950, 150], "dark"),             # on the scratch: false alarm (on a distractor)
            det([1000, 1000, 1075, 1075])]                # on nothing: false alarm
    m = match_page(dets, defects)
    assert (m["false_alarms"], m["on_distractors"], m["on_faint"], m["detections"]) == (2, 1, 1, 5)
    vis = [r for r in m["defects"] if r["visible"]]
    assert [r["found"] for r in vis] == [True, True, False]
    assert [r["type_ok"] for r in vis] == [True, False, None]
    s = summarize([m, match_page([], [gt(10, 10, de=12.0, area=0.3)])])   # a second page: one miss
    assert (s["pages"], s["visible"], s["found"]) == (2, 4, 2)
    assert s["recall"] == pytest.approx(0.5) and s["false alarms/page"] == pytest.approx(1.0)
    assert s["type accuracy"] == pytest.approx(0.5) and s["faint found"] == pytest.approx(1.0)
    assert s["recall ΔE 5–10"] == pytest.approx(1.0) and s["recall ΔE 10–20"] == pytest.approx(0.0)
    assert s["recall ΔE 20–40"] == pytest.approx(1.0) and s["recall ΔE ≥ 40"] == pytest.approx(0.0)
    assert s["recall 0.05–0.1 mm²"] == pytest.approx(1.0) and s["recall ≥ 2 mm²"] == pytest.approx(0.0)
    assert math.isnan(s["recall 1–2 mm²"])
    assert s["grid"]["0.25–0.5 mm²"]["10–20"] == "0/1" and s["grid"]["0.5–1 mm²"]["20–40"] == "1/1"
    assert s["misses"][0] == {"type": "gray_spot", "area_mm2": 2.5, "delta_e": 45.0}
    titles = [t.title for t in tables({"x": s})]
    assert titles[0].startswith("Per-defect evaluation") and len(titles) == 3


def tint_page(h=450, w=600, seed=0, rgb=(90.0, 160.0, 200.0), noise=1.5):
    rng = np.random.default_rng(seed)
    return np.array(rgb) + rng.normal(0, noise, (h, w, 3)), np.ones((h, w), bool)


def plant(page, cx, cy, r, delta):
    """A soft-edged disk added to the page; its pixel area (mm² at 600 dpi) by hand."""
    yy, xx = np.mgrid[: page.shape[0], : page.shape[1]]
    prof = np.clip(r - np.hypot(xx + 0.5 - cx, yy + 0.5 - cy) + 0.5, 0, 1)
    page += prof[..., None] * np.asarray(delta, float)
    return float(prof.sum()) * (25.4 / 600) ** 2


def test_a_page_with_known_spots_scored_through_the_detector():
    """Four spots of known place, type and size on a flat tint; the detector (candidates + FWHM features, every
    candidate accepted) must find each with its type, and nothing else."""
    page, mask = tint_page()
    truth = []
    for cx, cy, r, delta in ((110, 120, 9, 25), (330, 100, 6, -30), (480, 330, 14, 12), (200, 340, 5, -60)):
        area = plant(page, cx, cy, r, delta)
        truth.append(gt(cx, cy, "light" if delta > 0 else "dark", "gray_spot" if delta > 0 else "solid_spot",
                        area, abs(delta)))
    rgb = np.clip(page, 0, 255).astype(np.uint8)
    d = accept_all(BlockwiseDetector(dde_high=None, peak_low=2.5, method="fwhm"))
    table = d(rgb, mask, 600.0)
    m = match_page(detections(table, table["pred"], 600.0), truth)
    s = summarize([m])
    assert (s["visible"], s["found"], s["type accuracy"], s["false alarms/page"]) == (4, 4, 1.0, 0.0)
