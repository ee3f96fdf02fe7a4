"""Alignment at load time, identity-folder datasets, the Table 2.1 policies and the protocols' evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from projects.faceset.data import (
    CachedFeatures,
    FaceAligner,
    FaceImages,
    FaceSetDataModule,
    FaceSets,
    scan_identities,
    to_tensor,
)
from projects.faceset.demo_data import _canvas, canvas_points, identity_images
from projects.faceset.model import MeanPool
from projects.faceset.protocols import (
    IJBC,
    FolderSets,
    LFWPairs,
    build,
    policy_pair_scores,
    read_landmarks,
    read_lfw_pairs,
    scores_unaligned_unless_clean,
)
from shared.errors import UserError
from shared.face.align import template
from shared.io import write_image


def test_aligner_with_points_recovers_the_pasted_face():
    img = identity_images(1, 1)[0][0]
    crop, detected, unaligned = FaceAligner()(_write(img), canvas_points())
    assert detected and crop.shape == (112, 96, 3) and unaligned.shape == (112, 96, 3)
    assert np.abs(crop.astype(int) - img.astype(int)).max() <= 1  # pure translation: the face comes back
    assert not np.array_equal(unaligned, crop)
    # the warp maps the 5 points onto the template within a pixel
    from shared.face.align import align_face

    _, m = align_face(_canvas(img), canvas_points())
    mapped = canvas_points() @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - template("sphereface")[1]).max() < 1.0


def _write(img, tmp=[]):  # noqa: B006 - one temp dir per session is enough
    import tempfile
    from pathlib import Path

    if not tmp:
        tmp.append(Path(tempfile.mkdtemp()))
    path = tmp[0] / f"{len(list(tmp[0].iterdir()))}.png"
    write_image(path, _canvas(img))
    return path


def test_aligner_fallbacks_and_low_scores():
    img = identity_images(1, 1)[0][0]
    path = _write(img)
    crop, detected, _ = FaceAligner(min_score=0.5)(path, canvas_points(), score=0.1)
    assert not detected  # below the faceness threshold: unaligned crop
    crop2, detected2, _ = FaceAligner(assume_aligned=True)(path)
    assert detected2 and np.array_equal(crop, crop2)
    _, detected3, _ = FaceAligner(assume_aligned=False)(path)
    assert not detected3


def test_to_tensor_normalisation():
    """Sec. 2.2.1: pixels in [0, 1]; input_norm=sphereface gives the backbone SphereFace's (x − 127.5)/128."""
    from projects.faceset.model import FaceSetNet

    x = to_tensor(np.array([[[0, 127, 255]]], np.uint8))
    torch.testing.assert_close(x.view(-1), torch.tensor([0.0, 127.0, 255.0]) / 255)
    seen = []
    backbone = lambda t: seen.append(t) or t.flatten(1)  # noqa: E731
    for norm, ref in (("unit", [0.0, 127 / 255, 1.0]), ("sphereface", [-127.5 / 128, -0.5 / 128, 127.5 / 128])):
        FaceSetNet(backbone, input_norm=norm).embed(x[None])
        torch.testing.assert_close(seen[-1].view(-1), torch.tensor(ref))


def test_identity_datasets(faceset_data, tmp_path):
    names, images = scan_identities(faceset_data / "faceset_tiny" / "train")
    assert len(names) == 12 and all(len(f) == 8 for f in images)
    ds = FaceImages([(p, i) for i, fs in enumerate(images) for p in fs], FaceAligner())
    item = ds[9]
    assert item["image"].shape == (3, 112, 96) and item["label"] == 1 and item["detected"]
    sets = FaceSets(images, FaceAligner(), set_size=3, sets_per_identity=2)
    assert len(sets) == 24 and sets[13]["images"].shape == (3, 3, 112, 96) and sets[13]["label"] == 1
    with pytest.raises(UserError, match="no identity folders"):
        scan_identities(tmp_path)
    with pytest.raises(UserError, match="not found"):
        scan_identities(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bad.jpg").write_bytes(b"not an image")
    bad = FaceImages([(tmp_path / "a" / "bad.jpg", 0)], FaceAligner())
    with pytest.raises(UserError, match="cannot decode image"):
        bad[0]


def test_policies_by_hand():
    feats = np.array([[1.0, 0], [0, 1.0], [1.0, 1.0]])
    unal = np.array([[1.0, 0], [1.0, 0], [0, 1.0]])
    det = np.array([True, False, True])
    i1, i2 = np.array([0, 0, 1]), np.array([1, 2, 2])
    r = 2 ** -0.5
    keep, s = policy_pair_scores("ignore", feats, unal, det, i1, i2)
    assert keep.tolist() == [False, True, False]
    np.testing.assert_allclose(s, [r], atol=1e-6)
    np.testing.assert_allclose(policy_pair_scores("mixed", feats, unal, det, i1, i2)[1], [0, r, r], atol=1e-6)
    np.testing.assert_allclose(policy_pair_scores("both_unaligned", feats, unal, det, i1, i2)[1], [1, r, 0],
                               atol=1e-6)
    np.testing.assert_allclose(policy_pair_scores("none_aligned", feats, unal, det, i1, i2)[1], [1, 0, 0], atol=1e-6)
    with pytest.raises(UserError, match="unknown alignment policy"):
        policy_pair_scores("sometimes", feats, unal, det, i1, i2)


def test_lfw_files(faceset_data, tmp_path):
    a, b, labels, folds = read_lfw_pairs(faceset_data / "faceset_tiny" / "lfw" / "pairs.txt")
    assert folds == 2 and len(a) == len(b) == len(labels) == 12 and labels[:3].all() and not labels[3:6].any()
    marks = read_landmarks(faceset_data / "faceset_tiny" / "lfw" / "lfw_landmark.txt")
    assert len(marks) == 6 * 4 - 2
    np.testing.assert_allclose(next(iter(marks.values())), np.round(canvas_points()))
    (tmp_path / "pairs.txt").write_text("10 300\nA 1 2 3 4 5\n")
    with pytest.raises(UserError, match="not an LFW pair line"):
        read_lfw_pairs(tmp_path / "pairs.txt")


def _features_from_labels(labels: np.ndarray, dim: int = 8, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(labels.max() + 1, dim))
    return centres[labels] + noise * rng.normal(size=(len(labels), dim))


def _agg(feats, mask):
    return MeanPool(normalize=True)(feats, mask)


def test_protocols_on_separable_features(faceset_data, tmp_path):
    dm = FaceSetDataModule(num_workers=0)
    root = faceset_data / "faceset_tiny"
    folders = build("sets", {"kind": "folders", "root": str(root / "test")}, dm)
    assert isinstance(folders, FolderSets) and len(folders.dataset) == 24
    labels = np.array([lab for _, lab in folders.dataset.items])
    m, tables = folders.evaluate(_features_from_labels(labels), None, np.ones(24, bool), _agg, tmp_path)
    assert m["auc"] == 1.0 and m["rank1"] == 1.0 and (tmp_path / "sets_roc.png").is_file()
    m, _ = folders.evaluate(np.random.default_rng(1).normal(size=(24, 8)), None, np.ones(24, bool), _agg, None)
    assert m["auc"] < 0.9  # random features cannot separate

    ij = build("ijbc", {"kind": "ijbc", "root": str(root / "ijbc"), "min_score": 0.5}, dm)
    assert isinstance(ij, IJBC) and len(ij.dataset) == 24
    det = np.array([ij.dataset[i]["detected"] for i in range(3)])
    assert det.tolist() == [False, True, True]  # the first face has faceness 0.1 < 0.5
    subj = (ij.tids - 1) // 2
    m, tables = ij.evaluate(_features_from_labels(subj), None, np.ones(24, bool), _agg, tmp_path)
    assert m["tar@far0.001"] == 1.0 and m["rank1"] == 1.0 and m["tpir@fpir0.1"] == 1.0
    assert [t.title.split(" (")[0] for t in tables] == ["IJB-C 1:1 verification", "Table 2.3 layout: IJB-C 1:N "
                                                        "open-set identification"]
    assert {p.name for p in tmp_path.iterdir()} >= {"ijbc_1to1_roc.png", "ijbc_1toN_roc.png", "ijbc_cmc.png"}
    ign = build("ijbc", {"kind": "ijbc", "root": str(root / "ijbc"), "policy": "ignore"}, dm)
    det = np.ones(24, bool)
    det[:2] = False  # template 1 (2 faces) loses all faces → its pairs are dropped
    _, tables = ign.evaluate(_features_from_labels(subj), None, det, _agg, None)
    assert tables[0].rows[0]["pairs"] == 36 - 6

    lfw = build("lfw", {"kind": "lfw", "root": str(root / "lfw"), "landmarks": str(root / "lfw/lfw_landmark.txt")},
                dm)
    assert isinstance(lfw, LFWPairs)
    det = np.array([it["detected"] for it in (lfw.dataset[i] for i in range(len(lfw.dataset)))])
    assert (~det).sum() >= 1
    with pytest.raises(UserError, match="unknown kind"):
        build("x", {"kind": "megaface", "root": "."}, dm)


def test_cached_features(tmp_path):
    np.savez(tmp_path / "a.npz", feats=np.ones((3, 4), np.float32), detected=np.array([True, False, True]))
    ds = CachedFeatures(tmp_path / "a.npz", 3)
    item = ds[1]
    assert item["feature"].tolist() == [1.0] * 4 and item["detected"] is False and "feature_unaligned" not in item
    with pytest.raises(UserError, match="hold 3 faces, the test set has 5"):
        CachedFeatures(tmp_path / "a.npz", 5)
    (tmp_path / "b.npz").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read cached features"):
        CachedFeatures(tmp_path / "b.npz", 3)


def test_face_pairs_protocol_table_2_1(faceset_data, tmp_path):
    """Single-face pairs over the IJB-C fixture's loose crops with its 5-point file (face 1 has faceness 0.1)."""
    root = faceset_data / "faceset_tiny" / "ijbc"
    (root / "face_pairs.txt").write_text("1.jpg 2.jpg 1\n1.jpg 5.jpg 0\n3.jpg 4.jpg 1\n2.jpg 9.jpg 0\n")
    dm = FaceSetDataModule(num_workers=0)
    proto = build("ijbc_pairs", {"kind": "pairs", "root": str(root), "pairs": "face_pairs.txt",
                                 "points": "meta/ijbc_name_5pts_score.txt", "images": "loose_crop", "min_score": 0.5,
                                 "folds": 2}, dm)
    items = [proto.dataset[i] for i in range(len(proto.dataset))]
    detected = np.array([it["detected"] for it in items])
    assert len(items) == 6 and detected.tolist() == [False, True, True, True, True, True]  # sorted: 1, 2, 3, 4, 5, 9
    assert not torch.equal(items[1]["image"], items[1]["unaligned"])
    labels = np.array([0, 0, 0, 0, 1, 2])  # identities of faces 1, 2, 3, 4, 5, 9 (4 faces per identity)
    feats = _features_from_labels(labels)
    metrics, (table,) = proto.evaluate(feats, feats, detected, _agg, None)
    assert [r["pairs"] for r in table.rows] == [2, 4, 4, 4]  # policy 1 drops both pairs with face 1
    assert table.rows[1]["AUC"] == 1.0
    (root / "bad_pairs.txt").write_text("a.jpg b.jpg yes\n")
    with pytest.raises(UserError, match="expected 'image1 image2 label"):
        build("x", {"kind": "pairs", "root": str(root), "pairs": "bad_pairs.txt"}, dm)


def test_ijbc_both_unaligned_policy(faceset_data):
    """Setting 3 of Table 2.1 at template level: a pair of templates is scored on the unaligned crops of all their
    faces when either template holds a face without landmarks, on the aligned faces otherwise (1:1 and 1:N)."""
    desc = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    desc_u = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    clean = np.array([True, False, True])
    s = scores_unaligned_unless_clean(desc, desc_u, clean, np.array([0, 0, 1]), np.array([2, 1, 2]))
    np.testing.assert_allclose(s, [1.0, 1.0, 0.0], atol=1e-6)       # aligned; unaligned 0·1; unaligned 1·2
    sim = IJBC._similarity(desc, desc_u, clean, np.array([0, 1]), np.array([0, 2]))
    np.testing.assert_allclose(sim, [[1.0, 1.0], [1.0, 0.0]], atol=1e-6)   # row 2: unaligned (template 1 dirty)
    np.testing.assert_allclose(scores_unaligned_unless_clean(desc, None, clean, np.array([0]), np.array([1])), [0.0])

    dm = FaceSetDataModule(num_workers=0)
    root = faceset_data / "faceset_tiny" / "ijbc"
    ij = build("ijbc", {"kind": "ijbc", "root": str(root), "min_score": 0.5, "policy": "both_unaligned"}, dm)
    first = ij.dataset[0]
    assert first["detected"] is False and "unaligned" in first
    subj = (ij.tids - 1) // 2
    feats, det = _features_from_labels(subj), np.ones(24, bool)
    det[0] = False
    rng = np.random.default_rng(0)
    m_same, _ = ij.evaluate(feats, feats, det, _agg, None)
    m_mixed, _ = build("ijbc", {"kind": "ijbc", "root": str(root), "min_score": 0.5}, dm).evaluate(
        feats, None, det, _agg, None)
    assert m_same == m_mixed                                       # identical crops → the mixed numbers
    m_noise, (t11, _) = ij.evaluate(feats, rng.normal(size=feats.shape), det, _agg, None)
    assert m_noise["auc"] < m_same["auc"] and "in 1 of 12 templates" in t11.notes[0]
    with pytest.raises(UserError, match="both_unaligned needs the unaligned crops"):
        ij.evaluate(feats, None, det, _agg, None)
