"""MTCNN detection and 5-point similarity alignment against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from skimage.transform import SimilarityTransform

from shared import assets
from shared.errors import UserError
from shared.face.align import align_face, align_faces, residual, similarity_transform, template
from shared.face.mtcnn import MTCNN, ONet, PNet, RNet, _nms_min, asset_weights_dir, load_mtcnn


def _rot(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def test_similarity_recovers_a_known_transform_and_matches_skimage():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    a = 1.7 * _rot(23.0)
    dst = src @ a.T + np.array([12.0, -40.0])
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m, np.hstack([a, [[12.0], [-40.0]]]), atol=1e-9)
    noisy = dst + rng.normal(0, 2, dst.shape)  # least squares with noise: same answer as scikit-image
    ref = SimilarityTransform.from_estimate(src, noisy) if hasattr(SimilarityTransform, "from_estimate") else None
    if ref is None:
        ref = SimilarityTransform()
        ref.estimate(src, noisy)
    np.testing.assert_allclose(similarity_transform(src, noisy), ref.params[:2], atol=1e-8)


def test_reflective_fit_is_kept_only_when_better():
    _, dst = template("sphereface")
    mirrored = dst * np.array([-1.0, 1.0]) + np.array([300.0, 0.0])  # a mirror image of the template
    plain, refl = similarity_transform(mirrored, dst), similarity_transform(mirrored, dst, allow_reflection=True)
    assert residual(refl, mirrored, dst) < 1e-9 < residual(plain, mirrored, dst)
    assert np.linalg.det(refl[:, :2]) < 0 < np.linalg.det(plain[:, :2])
    same = similarity_transform(dst, dst, allow_reflection=True)
    np.testing.assert_allclose(same, np.hstack([np.eye(2), np.zeros((2, 1))]), atol=1e-9)


def test_templates_and_crop_sizes():
    (w, h), sp = template("sphereface")
    (w2, h2), af = template("arcface")
    assert (w, h, w2, h2) == (96, 112, 112, 112)
    np.testing.assert_allclose(af - sp, [[8.0, 0.0]] * 5)  # ArcFace = SphereFace shifted +8 px in x
    (w3, h3), big = template("sphereface", (192, 224))
    np.testing.assert_allclose(big, sp * 2)
    with pytest.raises(UserError, match="unknown alignment template"):
        template("vgg")


def test_align_face_moves_points_onto_the_template():
    """Warp a synthetic image with marks at known points; the marks land on the template positions."""
    (w, h), dst = template("arcface")
    src = dst @ (0.6 * _rot(-15.0)).T + np.array([140.0, 90.0])  # a smaller, rotated face somewhere
    img = np.zeros((300, 320, 3), np.uint8)
    for x, y in src:
        img[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2] = 255
    crop, m = align_face(img, src, "arcface")
    assert crop.shape == (h, w, 3)
    np.testing.assert_allclose(src @ m[:, :2].T + m[:, 2], dst, atol=1e-6)
    for x, y in dst:  # the bright marks are found around the template points (within the mark's blur)
        yy, xx = np.nonzero(crop[..., 0] > 60)
        assert np.min(np.hypot(xx - x, yy - y)) < 1.5
    assert align_faces(img, np.stack([src, src]), "arcface").shape == (2, h, w, 3)
    assert align_faces(img, np.zeros((0, 5, 2)), "arcface").shape == (0, h, w, 3)


def test_nms_min_keeps_the_best_of_nested_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [2, 2, 6, 6], [20, 20, 30, 30], [21, 21, 29, 40]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8])
    # box 0 contains box 1 (overlap / smaller area = 1) → only the higher score survives; boxes 2, 3 overlap
    # by 8·9 / min(100, 152) = 0.72 > 0.7 → box 3 (higher) survives
    assert _nms_min(boxes, scores, 0.7).tolist() == [1, 3]
    assert sorted(_nms_min(boxes, scores, 0.75).tolist()) == [1, 2, 3]


def test_networks_load_state_dicts_from_a_directory(tmp_path):
    torch.manual_seed(0)
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        torch.save(cls().state_dict(), tmp_path / f"{name}.pt")
    net = MTCNN.from_dir(tmp_path)
    assert sum(p.numel() for p in net.parameters()) == 6632 + 100178 + 389040
    faces = net(np.full((64, 80, 3), 128, np.uint8))  # random weights: any number of faces, well-formed arrays
    assert faces.boxes.shape[1:] == (4,) and faces.points.shape[1:] == (5, 2)
    with pytest.raises(UserError, match="MTCNN weights not found"):
        MTCNN.from_dir(tmp_path / "none")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "pnet.pt")
    with pytest.raises(UserError, match="not an MTCNN pnet"):
        MTCNN.from_dir(tmp_path)
    with pytest.raises(UserError, match="H×W×3"):
        net(np.zeros((10, 10), np.uint8))


def test_load_mtcnn_once_per_folder_and_one_line_errors(tmp_path, monkeypatch):
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        torch.save(cls().state_dict(), tmp_path / f"{name}.pt")
    first = load_mtcnn(tmp_path)
    assert load_mtcnn(str(tmp_path)) is first and isinstance(first, MTCNN)
    with pytest.raises(UserError, match="MTCNN weights not found"):
        load_mtcnn(tmp_path / "none")

    def unfetched(fetch=True):
        raise assets.AssetUnavailable("facenet-pytorch not fetched")

    monkeypatch.setattr("shared.face.mtcnn.asset_weights_dir", unfetched)
    with pytest.raises(UserError, match=r"^MTCNN weights unavailable \(facenet-pytorch not fetched\); give a box$"):
        load_mtcnn(None, "give a box")


def _weights():
    try:
        return asset_weights_dir()
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")


@pytest.mark.assets
def test_real_mtcnn_on_astronaut_matches_the_reference_detection():
    """facenet-pytorch's MTCNN on skimage's astronaut (recorded in the team's face reference): box
    (181, 62)-(268, 172), points (205.0, 101.7) (246.8, 103.7) (224.7, 129.0) (201.7, 139.2) (245.3, 141.9)."""
    faces = MTCNN.from_dir(_weights())(data.astronaut())
    assert len(faces) == 1 and faces.scores[0] > 0.99
    np.testing.assert_allclose(faces.boxes[0], [181, 62, 268, 172], atol=2.5)
    ref = np.array([[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2], [245.3, 141.9]])
    np.testing.assert_allclose(faces.points[0], ref, atol=2.0)
    crop, m = align_face(data.astronaut(), faces.points[0], "sphereface")
    _, dst = template("sphereface")
    mapped = faces.points[0] @ m[:, :2].T + m[:, 2]
    assert residual(m, faces.points[0], dst) < 7.0
    assert np.abs(mapped[:2] - dst[:2]).max() < 3.0  # the eyes land within 3 px of the template
    assert crop.shape == (112, 96, 3) and crop.mean() > 40


@pytest.mark.assets
def test_real_mtcnn_finds_one_face_in_each_obama_photo():
    from shared.io import read_image

    net = MTCNN.from_dir(_weights())
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        img = read_image(assets.asset_file("face-recognition", f"test_images/{name}"))
        faces = net(img)
        assert len(faces) >= 1, name
        i = faces.largest()
        x1, y1, x2, y2 = faces.boxes[i]
        eyes, mouth = faces.points[i, :2], faces.points[i, 3:]
        assert x1 < eyes[:, 0].min() and eyes[:, 0].max() < x2 and y1 < eyes[:, 1].min()
        assert mouth[:, 1].min() > eyes[:, 1].max() and mouth[:, 1].max() < y2  # mouth below the eyes, in box
