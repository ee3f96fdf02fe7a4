"""300-W / 300-VW layouts, crops, flips, annotation noise and pseudo-video test sets on tiny fixtures."""

import numpy as np
import pytest
import torch

from projects.facealign.data import W300_SPLITS, FaceAlignDataModule, FaceImages, PseudoVideos, VideoClips, list_300w
from projects.facealign.landmarks import apply_affine, flip_points, inter_ocular, read_pts
from shared.errors import UserError
from shared.io import read_image


def test_300w_splits(fa_data):
    root = fa_data / "300W"
    assert len(list_300w(root, W300_SPLITS["train"])) == 18
    assert len(list_300w(root, W300_SPLITS["common"])) == 4 and len(list_300w(root, W300_SPLITS["full"])) == 6
    img, pts = list_300w(root, ["ibug"])[0]
    assert img.suffix == ".png" and pts == img.with_suffix(".pts")
    with pytest.raises(UserError, match="300-W folder not found"):
        list_300w(root, ["lfpw/valset"])
    (root / "empty").mkdir(exist_ok=True)
    with pytest.raises(UserError, match="no annotated images"):
        list_300w(root, ["empty"])


def test_eval_crops_map_back_to_the_annotation(fa_data):
    ds = FaceImages(fa_data / "300W", ["ibug"], size=48)
    item = ds[0]
    img_path, pts_path = ds.items[0]
    pts = read_pts(pts_path)
    assert item["image"].shape == (3, 48, 48) and item["target"].shape == (68, 2)
    back = apply_affine(item["to_image"].numpy(), item["target"].numpy() * 47)
    np.testing.assert_allclose(back, pts, atol=1e-3)
    np.testing.assert_allclose(item["gt"].numpy(), pts, atol=1e-5)
    t = item["target"].numpy()
    assert t.min() > 0.1 and t.max() < 0.9  # margin 25 % around the landmark box


def test_training_items_flip_and_jitter(fa_data):
    torch.manual_seed(0)
    ds = FaceImages(fa_data / "300W", ["afw"], size=48, train=True, jitter_shift=0.05, jitter_scale=0.1)
    pts = read_pts(ds.items[0][1]).astype(np.float64)
    w = read_image(ds.items[0][0]).shape[1]
    kinds = set()
    for _ in range(12):
        item = ds[0]
        gt = item["gt"].numpy()
        if np.allclose(gt, pts, atol=1e-4):
            kinds.add("orig")
        else:
            np.testing.assert_allclose(gt, flip_points(pts, w), atol=1e-4)
            kinds.add("flip")
        np.testing.assert_allclose(apply_affine(item["to_image"].numpy(), item["clean"].numpy() * 47), gt, atol=1e-3)
        assert gt[36:42, 0].mean() < gt[42:48, 0].mean()  # anatomy kept under flips
    assert kinds == {"orig", "flip"}


def test_training_annotation_noise_level(fa_data):
    torch.manual_seed(0)
    ds = FaceImages(fa_data / "300W", W300_SPLITS["train"], size=48, train=True, noise_sigma=0.03, flip=False)
    z = []
    for i in range(len(ds)):
        item = ds[i]
        d = inter_ocular(item["clean"].numpy())
        z.append(((item["target"] - item["clean"]).numpy() / d).ravel())
    z = np.concatenate(z)
    assert z.std() == pytest.approx(0.03, rel=0.1) and abs(z.mean()) < 0.005


def test_300vw_clips(fa_data):
    root = fa_data / "300VW"
    ds = VideoClips(root, ["001", 114], size=32)
    item = ds[1]
    assert item["name"] == "114" and item["crops"].shape == (8, 3, 32, 32) and item["frames"].shape == (8, 96, 96)
    np.testing.assert_allclose(item["gt"][4].numpy(), read_pts(root / "114" / "annot" / "000005.pts"), atol=1e-5)
    skipped = VideoClips(root, ["114"], size=32, skip_frames={114: [2, 5]}, with_frames=False)[0]
    assert skipped["gt"].shape[0] == 6 and "frames" not in skipped
    np.testing.assert_allclose(skipped["gt"][3].numpy(), read_pts(root / "114" / "annot" / "000006.pts"), atol=1e-5)
    ranged = VideoClips(root, ["114"], size=32, skip_frames={"114": "2, 4-5"}, with_frames=False)[0]
    assert ranged["gt"].shape[0] == 5
    np.testing.assert_allclose(ranged["gt"][2].numpy(), read_pts(root / "114" / "annot" / "000006.pts"), atol=1e-5)
    assert VideoClips(root, ["203"], size=32, max_frames=3)[0]["crops"].shape[0] == 3
    with pytest.raises(UserError, match="300-VW video 999 not found"):
        VideoClips(root, [999])
    with pytest.raises(UserError, match=r"skip_frames\[114\]: '7-x' is neither a frame number nor a range"):
        VideoClips(root, ["114"], skip_frames={114: "3, 7-x"})


def test_frame_lists_and_the_shipped_300vw_skip_list():
    from projects.facealign.data import parse_frames
    from shared.run import compose_config

    assert parse_frames("14, 147-150,382") == {14, 147, 148, 149, 150, 382}
    assert parse_frames([3, "5-6"]) == parse_frames("3 5-6") == {3, 5, 6} and parse_frames(9) == {9}
    with pytest.raises(UserError, match="'9-4' is neither"):
        parse_frames("9-4")
    cfg = compose_config("facealign", "eval", ["data=300vw"])
    skip = {k: parse_frames(v) for k, v in cfg.data.skip_frames.items()}
    assert len(skip) == 16 and sum(map(len, skip.values())) == 2127
    assert {722, 1618} <= skip["401"] and 725 not in skip["401"] and skip["540"] == {744, 746, 747, 748, 749, 750}
    test_ids = {f"{int(v):03d}" for k in ("category1", "category2", "category3") for v in cfg.data.test_sets[k].ids}
    assert set(skip) <= test_ids                               # every listed video is a test video
    assert all(cfg.data.test_sets[k].skip_frames == cfg.data.skip_frames
               for k in ("category1", "category2", "category3"))


def test_300vw_wrong_point_count_is_a_user_error(fa_data, tmp_path):
    import shutil

    shutil.copytree(fa_data / "300VW" / "410", tmp_path / "410")
    (tmp_path / "410" / "annot" / "000003.pts").write_text("version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n")
    with pytest.raises(UserError, match="000003.pts: expected 68 points, got 2"):
        VideoClips(tmp_path, [410], size=32)[0]


def test_pseudo_video_test_set_uses_one_box(fa_data):
    ds = PseudoVideos(fa_data / "300W", ["ibug"], size=32, frames=5, limit=1)
    item = ds[0]
    assert len(ds) == 1 and item["crops"].shape == (5, 3, 32, 32) and item["gt"].shape == (5, 68, 2)
    assert torch.allclose(item["to_image"][0], item["to_image"][-1])  # a fixed camera crop
    assert not torch.allclose(item["gt"][0], item["gt"][-1])  # while the face moves
    again = ds[0]
    assert torch.equal(again["crops"], item["crops"])  # deterministic per index


def test_datamodule_sets(fa_data):
    dm = FaceAlignDataModule(str(fa_data / "300W"), size=32, batch_size=4, num_workers=0, val_holdout=4, test_sets={
        "common": {"kind": "300w", "folders": W300_SPLITS["common"]}, "dropped": None,
        "category1": {"kind": "300vw", "root": str(fa_data / "300VW"), "ids": ["001"]},
        "pseudo": {"kind": "pseudo", "folders": ["ibug"], "frames": 4}})
    dm.setup()
    assert dm.test_names == ["common", "category1", "pseudo"] and len(dm.train_set) == 14 and len(dm.val_set) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["target"].shape == (4, 68, 2)
    bad = FaceAlignDataModule(str(fa_data / "300W"), test_sets={"x": {"kind": "celeba"}})
    with pytest.raises(UserError, match="unknown kind 'celeba'"):
        bad.setup("test")


def test_pseudo_video_augmentation_keeps_labels_exact(fa_data):
    torch.manual_seed(1)
    ds = FaceImages(fa_data / "300W", ["afw"], size=48, train=True, flip=False, pseudo_aug=1.0, jitter_shift=0,
                    jitter_scale=0)
    pts = read_pts(ds.items[0][1]).astype(np.float64)
    moved = 0
    for _ in range(5):
        item = ds[0]
        gt = item["gt"].numpy()
        moved += not np.allclose(gt, pts, atol=0.5)
        np.testing.assert_allclose(apply_affine(item["to_image"].numpy(), item["target"].numpy() * 47), gt, atol=1e-3)
        assert torch.allclose(item["target"], item["clean"], atol=1e-5)  # no annotation noise requested
    assert moved >= 4  # the storyboard frame moved the face


def test_static_pseudo_video_keeps_the_face_still(fa_data):
    ds = PseudoVideos(fa_data / "300W", ["ibug"], size=32, frames=5, limit=1, static=True)
    item = ds[0]
    pts = read_pts(ds.items[0][1])
    for t in range(5):
        np.testing.assert_allclose(item["gt"][t].numpy(), pts, atol=1e-4)
    assert not torch.equal(item["crops"][0], item["crops"][-1])  # photometric changes only
