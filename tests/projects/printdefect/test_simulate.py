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


def _flat(screen="round", lpi=150.0, color="c60m0y0k0", dot_gain=0.0, blur=0.0, w=560, h=420, **kw):
    """One region of one colour on a small noise-free page (no illumination, texture or skew)."""
    from projects.printdefect.simulate import domain_config

    cfg = domain_config("classic", size=[w, h], grid=[1, 1], margin_mm=2.0, barcode_mm=0.0, gap_mm=1.0,
                        colors=[color], defects={}, screen=screen, lpi=lpi, dot_gain=dot_gain,
                        blur_sigma_px600=blur, noise=0.0, illumination=0.0, **kw)
    rgb, mask, gt = simulate_page(cfg, seed=2)
    x0, y0, x1, y1 = gt["regions"][0]["box"]
    return rgb, (x0 + 8, y0 + 8, x1 - 8, y1 - 8), gt


def _linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB 8-bit → linear reflectance (IEC 61966-2-1), written out independently of the simulator's table."""
    v = rgb.astype(np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


@pytest.mark.parametrize(("screen", "tint", "gain"),
                         [(s, t, g) for s in ("round", "elliptical", "line", "fm")
                          for t, g in ((0.1, 0.0), (0.5, 0.15))]
                         + [("round", 0.9, 0.0), ("line", 0.3, 0.1)])
def test_measured_coverage_is_the_tint_plus_dot_gain(screen, tint, gain):
    """Cyan absorbs 80 % of red light at full coverage: the region's mean red reflectance / paper gives the ink's
    area coverage, which must be the tint plus the dot gain 4·g·t(1 − t)."""
    from projects.printdefect.simulate import ABSORB

    rgb, (x0, y0, x1, y1), gt = _flat(screen, 150.0, f"c{round(tint * 100)}m0y0k0", gain, w=320, h=260)
    red = _linear(rgb[y0:y1, x0:x1, 0]).mean() / gt["scan"]["paper"]
    coverage = (1 - red) / ABSORB[0, 0]
    assert coverage == pytest.approx(tint + 4 * gain * tint * (1 - tint), abs=0.015)


@pytest.mark.parametrize(("lpi", "offset"), [(100.0, 0.0), (150.0, 10.0), (200.0, -20.0)])
def test_measured_screen_ruling_and_angle(lpi, offset):
    """The strongest spatial frequency of a cyan tint (screen angle 15° + offset): its radius is lpi / dpi cycles
    per pixel and its direction the screen angle (mod 90°)."""
    rgb, (x0, y0, x1, y1), _ = _flat("round", lpi, "c40m0y0k0", angle_offset_deg=offset)
    red = _linear(rgb[y0:y1, x0:x1, 0])
    red = (red - red.mean()) * np.outer(np.hanning(red.shape[0]), np.hanning(red.shape[1]))
    spec = np.abs(np.fft.fft2(red))
    fy, fx = np.meshgrid(np.fft.fftfreq(red.shape[0]), np.fft.fftfreq(red.shape[1]), indexing="ij")
    spec[np.hypot(fx, fy) < 0.05] = 0
    i = np.unravel_index(spec.argmax(), spec.shape)
    assert np.hypot(fx[i], fy[i]) * 600.0 == pytest.approx(lpi, rel=0.03)
    angle = np.degrees(np.arctan2(fy[i], fx[i])) % 90.0
    assert min(abs(angle - (15.0 + offset) % 90.0), 90 - abs(angle - (15.0 + offset) % 90.0)) < 2.0


@pytest.mark.parametrize("sigma", [0.8, 2.0])
def test_measured_scanner_blur(sigma):
    """The left edge of a solid black region: the 10–90 % rise of the linear reflectance spans 2.563·σ px."""
    rgb, (x0, y0, x1, y1), gt = _flat("round", 150.0, "c0m0y0k100", blur=sigma)
    edge = gt["regions"][0]["box"][0]
    profile = _linear(rgb[y0:y1, edge - 12:edge + 12, 1]).mean(0)
    lo, hi = profile[-1], profile[0]                          # black inside, paper outside
    level = (profile - lo) / (hi - lo)
    xs = np.arange(len(level))
    x90 = np.interp(0.9, level[::-1], xs[::-1])               # decreasing profile
    x10 = np.interp(0.1, level[::-1], xs[::-1])
    assert x10 - x90 == pytest.approx(2.563 * sigma, abs=0.4)


def test_domains_draw_their_own_settings():
    """The domain knob: pages of "a" and "b" take their screens, rulings and scanner from disjoint ranges."""
    from projects.printdefect.simulate import DOMAINS, domain_config

    for dom in ("a", "b"):
        for seed in range(4):
            _, _, gt = simulate_page(domain_config(dom, size=[300, 260], grid=[1, 1], margin_mm=2, barcode_mm=0,
                                                   defects={}), seed=seed)
            s = gt["scan"]
            assert s["screen"] in DOMAINS[dom]["screen"]
            if dom == "a":
                assert 133 <= s["lpi"] <= 175 and 0.8 <= s["blur_sigma_px600"] <= 1.2 and s["noise"] <= 2.0
            else:
                assert (100 <= s["lpi"] <= 125 or 180 <= s["lpi"] <= 200) and s["blur_sigma_px600"] >= 1.25
                assert s["noise"] >= 2.0 and abs(s["skew_deg"]) >= 0.25
