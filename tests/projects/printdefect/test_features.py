"""Valley emphasis / Otsu (Eq. 1.7–1.8) on a hand-worked histogram, defect attributes, block labels."""

import numpy as np
import pytest
import torch

from projects.printdefect.features import (
    _between_class,
    block_labels,
    defect_features,
    otsu_threshold,
    valley_emphasis_threshold,
)

# counts over levels 0..4 → p = [.4, .1, 0, .3, .2], total mean 1.8
HIST = np.array([4, 1, 0, 3, 2])


def test_between_class_by_hand():
    obj, p = _between_class(HIST)
    # t=0: 0 + 1.8²/.6 ; t=1: .1²/.5 + 1.7²/.5 ; t=2 same ; t=3: 1²/.8 + .8²/.2 ; t=4: 1.8²/1
    assert obj[0] == pytest.approx([5.4, 5.8, 5.8, 4.45, 3.24])
    assert p[0] == pytest.approx([0.4, 0.1, 0.0, 0.3, 0.2])


def test_otsu_and_valley_emphasis_by_hand():
    # Otsu: first maximum of [5.4, 5.8, 5.8, 4.45, 3.24] → t = 1
    assert otsu_threshold(HIST)[0] == 1
    # valley emphasis: (1-p)·obj = [3.24, 5.22, 5.8, 3.115, 2.592] → t = 2 (the empty "valley" level)
    assert valley_emphasis_threshold(HIST)[0] == 2


def test_otsu_matches_scikit_image():
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(0)
    for _ in range(5):
        hist = np.concatenate([rng.integers(0, 50, 30), rng.integers(0, 5, 10), rng.integers(0, 30, 20)])
        centers = np.arange(len(hist))
        assert otsu_threshold(hist)[0] == threshold_otsu(hist=(hist, centers))


def _block_with_spot(b=19, val=60.0, spot=(slice(3, 8), slice(10, 15))):
    lab = np.zeros((b, b * 2, 3), np.float32)
    lab[..., 0] = 50.0
    lab[spot[0], spot[1], 0] = val
    mask = np.ones(lab.shape[:2], bool)
    lab[:, b:, 0] = 99.0                      # a second block, fully masked except a little
    mask[:, b:] = False
    return lab, mask


@pytest.mark.parametrize("method", ["valley", "otsu"])
@pytest.mark.parametrize("channel", ["L", "dE"])
@pytest.mark.parametrize("val", [60.0, 40.0])
def test_square_spot_attributes_by_hand(method, channel, val):
    b = 19
    lab, mask = _block_with_spot(b, val)
    f = defect_features(torch.from_numpy(lab), torch.from_numpy(mask), np.array([[0, 0, b, b]]), b, channel, method)
    assert f["size"][0] == 25
    assert f["light"][0] == (val > 50)
    # block mean L = 50 ± 10·25/361; ΔE = 10 − δ on the spot and δ elsewhere → Σ ratio = 25(10−δ) / (336 δ)
    delta = 10 * 25 / 361
    assert f["severity"][0] == pytest.approx(25 * (10 - delta) / (336 * delta))
    # a 5×5 square: variance of 0..4 = 2 along both axes → major = minor = 4√2
    assert f["major"][0] == pytest.approx(4 * np.sqrt(2)) and f["minor"][0] == pytest.approx(4 * np.sqrt(2))
    assert (f["cx"][0], f["cy"][0]) == pytest.approx((12.0, 5.0))
    assert [f[k][0] for k in ("dx0", "dy0", "dx1", "dy1")] == [10, 3, 15, 8]


def test_ellipse_axes_match_regionprops():
    from skimage.draw import ellipse
    from skimage.measure import regionprops

    b = 41
    lab = np.full((b, b, 3), 50.0, np.float32)
    rr, cc = ellipse(20, 18, 6, 14, shape=(b, b), rotation=0.6)
    lab[rr, cc, 0] = 62.0
    mask = np.ones((b, b), bool)
    f = defect_features(torch.from_numpy(lab), torch.from_numpy(mask), np.array([[0, 0, b, b]]), b)
    region = np.zeros((b, b), np.uint8)
    region[rr, cc] = 1
    (props,) = regionprops(region)
    assert f["size"][0] == props.area
    assert f["major"][0] == pytest.approx(props.axis_major_length, rel=1e-9)
    assert f["minor"][0] == pytest.approx(props.axis_minor_length, rel=1e-9)


def test_masked_pixels_do_not_count():
    b = 19
    lab, mask = _block_with_spot(b, 60.0)
    lab[15:19, 0:4, 0] = 0.0                   # a black blob under the mask
    mask[15:19, 0:4] = False
    f = defect_features(torch.from_numpy(lab), torch.from_numpy(mask), np.array([[0, 0, b, b]]), b)
    assert f["size"][0] == 25 and f["light"][0]


def test_block_labels():
    boxes = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [0, 10, 10, 20]])
    defects = [{"bbox": [6, 2, 10, 6], "visible": True},      # all in block 0
               {"bbox": [18, 2, 22, 4], "visible": True},     # half in block 1, half in block 2
               {"bbox": [2, 12, 4, 14], "visible": False}]    # invisible: never a positive
    assert block_labels(boxes, defects).tolist() == [1, 1, 1, 0]
    assert block_labels(boxes, defects, min_fraction=0.6).tolist() == [1, -1, -1, 0]
