"""Page I/O (alpha mask, separate mask, TIFF, dpi) and preprocessing (Sec. 1.2.1) against independent references."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from projects.printdefect.page import (
    descreen_lab_numpy,
    descreen_numpy,
    descreen_torch,
    gaussian_kernel,
    preprocess,
    read_page,
    rgb_to_lab_numpy,
    rgb_to_lab_torch,
    write_page,
)
from shared.errors import UserError


@pytest.fixture
def img():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)


def test_rgba_png_alpha_is_mask_and_dpi_from_file(img, tmp_path):
    mask = np.zeros(img.shape[:2], bool)
    mask[5:30, 8:40] = True
    write_page(tmp_path / "p.png", img, mask, 600)
    page = read_page(tmp_path / "p.png")
    assert np.array_equal(page.rgb, img) and np.array_equal(page.mask, mask) and page.dpi == 600
    assert read_page(tmp_path / "p.png", dpi=300).dpi == 300


def test_rgb_tiff_with_separate_mask(img, tmp_path):
    Image.fromarray(img).save(tmp_path / "scan.tif", dpi=(400, 400))
    mask = np.zeros(img.shape[:2], np.uint8)
    mask[:, 20:] = 255
    cv2.imwrite(str(tmp_path / "scan_mask.png"), mask)
    page = read_page(tmp_path / "scan.tif")
    assert np.array_equal(page.rgb, img) and page.dpi == 400 and np.array_equal(page.mask, mask > 0)
    cv2.imwrite(str(tmp_path / "other.png"), 255 - mask)
    assert np.array_equal(read_page(tmp_path / "scan.tif", mask=tmp_path / "other.png").mask, mask == 0)


def test_page_errors(img, tmp_path):
    cv2.imwrite(str(tmp_path / "rgb.png"), img)
    with pytest.raises(UserError, match="has no mask"):
        read_page(tmp_path / "rgb.png", dpi=600)
    assert read_page(tmp_path / "rgb.png", dpi=600, require_mask=False).mask.all()
    with pytest.raises(UserError, match="stores no resolution"):
        read_page(tmp_path / "rgb.png", require_mask=False)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="cannot decode"):
        read_page(tmp_path / "bad.png")
    with pytest.raises(UserError, match="not found"):
        read_page(tmp_path / "missing.png")
    cv2.imwrite(str(tmp_path / "rgb_mask.png"), np.zeros((5, 5), np.uint8))
    with pytest.raises(UserError, match="does not match"):
        read_page(tmp_path / "rgb.png", dpi=600)


@pytest.mark.parametrize(("size", "sigma"), [(12, 2.0), (6, 1.0), (7, 1.5)])
def test_descreen_equals_direct_correlation(img, size, sigma):
    """Both implementations against an explicit 2-D correlation with the outer-product kernel (anchor (k-1)//2,
    reflect-101 border)."""
    g = gaussian_kernel(size, sigma)
    assert g.sum() == pytest.approx(1.0) and np.allclose(g, g[::-1])
    a = (size - 1) // 2
    pad = np.pad(img.astype(np.float64) / 255, ((a, size - 1 - a), (a, size - 1 - a), (0, 0)), mode="reflect")
    k2 = np.outer(g, g)
    ref = np.zeros(img.shape)
    for dy in range(size):
        for dx in range(size):
            ref += k2[dy, dx] * pad[dy:dy + img.shape[0], dx:dx + img.shape[1]]
    assert np.abs(descreen_numpy(img, size, sigma) - ref).max() < 2e-6
    t = descreen_torch(torch.from_numpy(img).permute(2, 0, 1)[None], size, sigma)[0].permute(1, 2, 0).numpy()
    assert np.abs(t - ref).max() < 2e-6


def test_lab_matches_scikit_image(img):
    from skimage.color import rgb2lab

    x = img.astype(np.float32) / 255
    ref = rgb2lab(x.astype(np.float64))                   # D65, sRGB
    assert np.abs(rgb_to_lab_numpy(x) - ref).max() < 0.5
    t = rgb_to_lab_torch(torch.from_numpy(x).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(t - ref).max() < 1e-3


def test_preprocess_backends_agree(img):
    a = preprocess(img, 600, backend="opencv").numpy()
    b = preprocess(img, 600, backend="torch").numpy()
    assert a.shape == img.shape and np.abs(a - b).max() < 0.5


@pytest.mark.parametrize("strip", [5, 8, 16])
def test_strip_preprocessing_equals_the_whole_page(strip):
    """Strips with their halo give bit-identical L*a*b* to the whole-page filter + conversion, first and last
    strip included (reflected border only at the page's own edges)."""
    img = np.random.default_rng(1).integers(0, 256, (71, 23, 3), dtype=np.uint8)
    whole = rgb_to_lab_numpy(descreen_numpy(img, 12, 2.0))
    assert np.array_equal(descreen_lab_numpy(img, 12, 2.0, strip=strip), whole)


def test_auto_mask_keeps_paper_and_isolated_spots_drops_content(tmp_path):
    """``mask="auto"`` on a 300-dpi page built here: a block of text-like strokes (content), a mark 3 mm from it
    (typography), an isolated 1-mm spot 20 mm away (a possible defect) on grainy paper."""
    rng = np.random.default_rng(0)
    h, w, px = 900, 1200, 300 / 25.4                                  # px per mm
    rgb = np.clip(np.array([235.0, 228.0, 210.0]) + rng.normal(0, 2.0, (h, w, 3)), 0, 255)
    for line in range(6):                                             # 6 lines of 5-mm 'words', 1 mm apart
        for word in range(8):
            y, x = int(150 + line * 6 * px), int(120 + word * 6 * px)
            rgb[y:y + int(2 * px), x:x + int(5 * px)] = 30.0
    text_right = 120 + 7 * 6 * px + 5 * px
    near = (int(150 + 2 * px), int(text_right + 3 * px))              # a dot 3 mm right of the text
    spot = (700, 900)                                                 # far from everything
    for cy, cx in (near, spot):
        yy, xx = np.mgrid[:h, :w]
        rgb[(yy - cy) ** 2 + (xx - cx) ** 2 <= (0.5 * px) ** 2] = 40.0
    rgb = rgb.astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "page.png", dpi=(300, 300))
    page = read_page(tmp_path / "page.png", mask="auto")
    m = page.mask
    assert page.dpi == 300 and m.shape == (h, w)
    assert m[spot] and not m[near]                                    # the isolated spot stays, the mark goes
    assert m[150:150 + int((5 * 6 + 2) * px), 120:int(text_right)].mean() < 0.01   # the text block, gaps included
    assert not m[:int(2.9 * px)].any() and not m[:, -int(2.9 * px):].any()   # the border band
    assert m[750:850, 200:600].all()                                 # plain paper
    # the detector sees the isolated spot, not the text (every candidate accepted)
    from projects.printdefect.model import BlockwiseDetector
    from projects.printdefect.output import detections
    from tests.projects.printdefect.test_detector import accept_all

    det = accept_all(BlockwiseDetector(dde_high=None, peak_low=2.5, method="fwhm", min_contrast=3.0))
    table = det(page.rgb, page.mask, page.dpi)
    found = detections(table, table["pred"], page.dpi)
    assert len(found) == 1 and found[0]["type"] == "solid_spot"
    x0, y0, x1, y1 = found[0]["box"]
    assert x0 <= spot[1] < x1 and y0 <= spot[0] < y1
