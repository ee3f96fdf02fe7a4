"""Chapter 3 runs as the chapter describes them: validation held out of the training images (never a test set), the
Table 3.1 losses and noise presets, 300-VW training frames with corrected annotations ("Ours-new"), the detector-box
protocol on 300-VW, Eq. 3.12's α at both limits, and the sweep study tables (Tables 3.1–3.4, Fig. 3.10)."""

import json
import shutil

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from projects.facealign import metrics as M
from projects.facealign.data import FaceAlignDataModule, VWFrames, list_300w, sample_frames, split_holdout
from projects.facealign.fusion import FlowFusion
from projects.facealign.landmarks import (
    apply_affine,
    crop_transform,
    invert_affine,
    landmark_box,
    read_pts,
    warp_crop,
)
from projects.facealign.model import TABLE_3_1, LandmarkLoss
from projects.facealign.module import FaceAlignModule, next_box
from shared.errors import UserError
from shared.io import iter_video
from shared.run import compose_config
from tests.projects.facealign.test_model import best_constant

EXPERIMENTS = ["smoke", "demo", "300w", "noise_sweep", "finetune", "table3_1", "ours_base", "ours_new",
               "fig3_10_corrected", "fig3_10_noise", "fig3_10_aug", "vw_raw"]


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_no_validation_image_is_in_a_test_set(exp, fa_data):
    """Every preset on the real 300-W layout: validation = images held out of the training folders by the seeded
    rule, none of them in any configured test set."""
    cfg = compose_config("facealign", "train", [f"+experiment={exp}", f"paths.data_dir={fa_data}"])
    assert cfg.data.val_folders is None and cfg.data.val_holdout > 0
    dm = instantiate(cfg.data, _convert_="all", val_holdout=4 if exp != "finetune" else 1)
    train, val = dm.split()
    train_files, val_files = {str(i) for i, _ in train}, {str(i) for i, _ in val}
    tests = {str(f) for files in dm.test_files().values() for f in files}
    assert val_files and tests and not val_files & tests and not train_files & val_files
    folders = [str(fa_data / "300W" / f) for f in cfg.data.train_folders]
    assert all(any(v.startswith(f) for f in folders) for v in val_files)


def test_holdout_rule_and_refused_overlaps(fa_data, tmp_path):
    """The documented rule (a permutation seeded with val_seed of the sorted list; the first k are validation), and
    setup refuses validation on a test folder and a validation image whose bytes equal a test image's."""
    items = list_300w(fa_data / "300W", ["lfpw/trainset", "helen/trainset", "afw"])
    train, val = split_holdout(list(reversed(items)), 4, seed=3)
    ref = sorted(items)
    pick = np.random.default_rng(3).permutation(len(ref))[:4]
    assert val == sorted(ref[i] for i in pick) and len(train) == len(items) - 4 and not set(train) & set(val)
    assert split_holdout(items, 4, seed=4)[1] != val
    tests = {"common": {"kind": "300w", "folders": ["lfpw/testset", "helen/testset"]}}
    dm = FaceAlignDataModule(str(fa_data / "300W"), val_folders=["lfpw/testset"], test_sets=tests, num_workers=0)
    with pytest.raises(UserError, match="validation file.*test set 'common'"):
        dm.setup("fit")
    root = tmp_path / "300W"
    shutil.copytree(fa_data / "300W", root)
    for f in (root / "afw").iterdir():  # a validation folder holding a test face under another name
        f.unlink()
    for ext in (".png", ".pts"):
        shutil.copy(root / "lfpw" / "testset" / f"image_0001{ext}", root / "afw" / f"copy{ext}")
    dm = FaceAlignDataModule(str(root), train_folders=["lfpw/trainset"], val_folders=["afw"], test_sets=tests,
                             num_workers=0)
    with pytest.raises(UserError, match="same content"):
        dm.setup("fit")


# ------------------------------------------------------------------------------------------------ Table 3.1
def test_table_3_1_losses_against_their_formulas():
    pred = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [0.5, 0.5]]])
    tgt = torch.tensor([[[0.3, -0.4], [1.0, 1.9], [0.0, 0.0]]])
    valid = torch.tensor([[[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]])  # 3 of 6 coordinates kept
    d2 = [0.09, 0.16, 0.0, 0.01, 0.25, 0.25]
    assert LandmarkLoss("l2")(pred, tgt).item() == pytest.approx(sum(d2) / 3)  # mean over points of ‖d‖²
    # Modified L2 [70]: the kept coordinates only, 2·Σ m d² / Σ m (= L2 when nothing is dropped)
    assert LandmarkLoss("modified_l2")(pred, tgt, valid).item() == pytest.approx(2 * (0.09 + 0.16 + 0.0) / 3)
    assert LandmarkLoss("modified_l2")(pred, tgt, torch.ones_like(tgt)).item() == pytest.approx(sum(d2) / 3)
    assert LandmarkLoss("l1")(pred, tgt).item() == pytest.approx(sum(v ** 0.5 for v in d2) / 6)
    l0 = LandmarkLoss("l0", gamma=0.0, gamma_start=2.0, anneal_steps=100, eps=1e-3)
    assert [l0.l0_gamma(s) for s in (0, 25, 100, 500)] == pytest.approx([2.0, 1.5, 0.0, 0.0])
    ref = sum((v ** 0.5 + 1e-3) ** 1.5 for v in d2) / 6
    assert l0(pred, tgt, step=25).item() == pytest.approx(ref, rel=1e-5)
    assert LandmarkLoss("l0")(pred, tgt).item() == pytest.approx(sum((v ** 0.5 + 1e-3) ** 0.5 for v in d2) / 6)


def test_modified_l2_recovers_the_truth_under_bernoulli_noise_l2_does_not():
    """20 % of the targets dropped to 0 (multiplicative Bernoulli noise): the constant minimising L2 is the biased
    mean 0.8·y, the one minimising the Modified L2 with the known mask is y."""
    y = 0.6
    tgt = torch.full((100, 1, 2), y)
    tgt[:20] = 0.0
    valid = torch.ones_like(tgt)
    valid[:20] = 0.0
    res = {kind: best_constant(kind, tgt, 0.1, valid) for kind in ("l2", "modified_l2")}
    assert res["modified_l2"] == pytest.approx(y, abs=0.005) and res["l2"] == pytest.approx(0.8 * y, abs=0.005)


@pytest.mark.parametrize("noise", ["gaussian", "poisson", "bernoulli", "salt_pepper", "impulse"])
def test_each_table_3_1_row_is_a_preset(noise, fa_data):
    cfg = compose_config("facealign", "train", ["+experiment=table3_1", f"+noise={noise}"])
    assert cfg.data.noise_type == noise and cfg.model.loss == TABLE_3_1[noise]
    assert {"gaussian": "l2", "poisson": "l2", "bernoulli": "modified_l2", "salt_pepper": "l1",
            "impulse": "l0"}[noise] == cfg.model.loss  # the table's pairing, by hand
    level = cfg.data.noise_sigma if noise in ("gaussian", "poisson") else cfg.data.noise_prob
    assert level > 0


def test_bernoulli_targets_are_zeroed_and_masked(fa_data):
    from projects.facealign.data import FaceImages

    torch.manual_seed(0)
    ds = FaceImages(fa_data / "300W", ["afw"], size=32, train=True, noise_type="bernoulli", noise_prob=0.3,
                    flip=False, jitter_shift=0, jitter_scale=0)
    item = ds[0]
    kept = item["valid"].bool()
    assert 0.15 < 1 - kept.float().mean() < 0.45
    assert torch.all(item["target"][~kept] == 0) and torch.allclose(item["target"][kept], item["clean"][kept])


# ------------------------------------------------------------------------------------------------ 300-VW training
def test_corrected_300vw_frames_train(fa_data, tmp_path):
    """correct_300vw → the training data set: frames decoded from vid.avi (cached losslessly), landmarks read from
    the corrected files (not the raw ones), the evenly spaced frame sample; then a short training on it runs."""
    from projects.facealign.correct_300vw import main as correct

    assert correct([str(fa_data / "300VW"), str(tmp_path / "corrected"), "--ids", "001"]) == 0
    assert sample_frames(list(range(1, 9)), 4) == [1, 3, 6, 8]  # linspace(0, 7, 4) = 0, 2.33, 4.67, 7 → rounded
    ds = VWFrames(fa_data / "300VW", ["001"], annot_root=tmp_path / "corrected", cache_dir=tmp_path / "cache",
                  frames_per_video=4, size=48, train=True, flip=False, jitter_shift=0, jitter_scale=0)
    assert ds.prepare(progress=False) == 4 and ds.prepare(progress=False) == 0  # decoded once
    frames = {k: f for k, f in enumerate(iter_video(fa_data / "300VW" / "001" / "vid.avi"), start=1)}
    moved = 0
    for i, k in enumerate([1, 3, 6, 8]):
        item = ds[i]
        corrected = read_pts(tmp_path / "corrected" / "001" / "annot" / f"{k:06d}.pts").astype(np.float64)
        raw = read_pts(fa_data / "300VW" / "001" / "annot" / f"{k:06d}.pts").astype(np.float64)
        pts = apply_affine(item["to_image"].numpy().astype(np.float64), item["target"].numpy() * 47)
        np.testing.assert_allclose(pts, corrected, atol=1e-3)
        moved += np.abs(corrected - raw).max() > 1e-3
        m = crop_transform(landmark_box(corrected), 48, 0.25)
        np.testing.assert_allclose(item["image"].numpy(), warp_crop(frames[k], m, 48).transpose(2, 0, 1) / 255.0,
                                   atol=1e-6)
    assert moved >= 2  # the labels are the corrected ones
    # a short training on 300-W + these frames: 2 steps through the data module and the module
    overrides = ["+experiment=smoke", f"paths.data_dir={fa_data}", f"data.cache_dir={tmp_path / 'cache'}",
                 f"data.vw_train={{annot_root: '{tmp_path / 'corrected'}', ids: ['001'], frames_per_video: 4}}"]
    cfg = compose_config("facealign", "train", overrides)
    dm = instantiate(cfg.data, _convert_="all")
    with pytest.raises(UserError, match="training file.*test set 'category1'"):  # 001 is also a tiny test video
        dm.setup("fit")
    cfg = compose_config("facealign", "train", [*overrides, "data.test_sets.category1.ids=[114]"])
    dm, module = instantiate(cfg.data, _convert_="all"), instantiate(cfg.model, _convert_="all")
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                         num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2 and len(dm.train_set) == 14 + 4


# ------------------------------------------------------------------------------------------------ detector box
class Oracle(nn.Module):
    """A fixed prediction (every point at the crop centre): the expected output is known from the crop box."""

    in_size = 32

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.full((x.shape[0], 68, 2), 0.5) + 0 * self.w


def test_300vw_detector_box_protocol(fa_data, tmp_path):
    """kind 300vw_detected: frame t's box is the detection overlapping its annotated face most; a missed frame is
    cropped from the previous prediction (the first frame from its landmark box), as infer does; the numbers equal a
    naive per-frame loop and the table names the protocol. Detections are cached per video."""
    from projects.facealign.data import DetectedClips

    gts = [read_pts(p).astype(np.float64) for p in sorted((fa_data / "300VW" / "114" / "annot").glob("*.pts"))]
    shift, miss = np.array([-3.0, -5.0, 4.0, 2.0]), {0, 3}
    calls = []

    def detector(frame):
        t = len(calls)
        calls.append(t)
        return np.array([[0, 0, 6, 6]] + ([] if t in miss else [landmark_box(gts[t]) + shift]), float)

    detector.cache_tag = "stub-v1"
    tests = {"category1_detected": {"kind": "300vw_detected", "root": str(fa_data / "300VW"), "ids": [114],
                                    "detector": detector}}
    dm = FaceAlignDataModule(str(fa_data / "300W"), num_workers=0, cache_dir=str(tmp_path), test_sets=tests)
    module = FaceAlignModule(Oracle(), refine_iters=1, plots=False, fusion=None)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                         enable_model_summary=False)
    m = {k: v for r in trainer.test(module, datamodule=dm, verbose=False) for k, v in r.items()}
    preds, cur, ref = [], None, None
    for t, gt in enumerate(gts):  # the naive loop
        if t not in miss:
            cur = ref = landmark_box(gt) + shift
        elif cur is None:
            cur = ref = landmark_box(gt)
        p = apply_affine(invert_affine(crop_transform(cur, 32, 0.25)), np.full((68, 2), 15.5))
        preds.append(p)
        cur = next_box(p, ref)
    preds = np.stack(preds)
    assert m["test/category1_detected/nme"] == pytest.approx(M.nme(preds, np.stack(gts)).mean(), rel=1e-6)
    assert m["test/category1_detected/sdd"] == pytest.approx(M.sdd(preds, np.stack(gts)).mean(), rel=1e-6)
    assert m["test/category1_detected/detector_misses"] == 2 and m["test/category1_detected/count"] == len(gts)
    titles = [t.title for t in module.report_tables([m])]
    assert "Table 3.2 layout: NME (%) on 300-VW (inter-ocular), detector box" in titles
    # the cache: a second data set reads the detections without running a detector
    def never(frame):
        raise AssertionError("detections should come from the cache")

    never.cache_tag = "stub-v1"
    item = DetectedClips(fa_data / "300VW", [114], cache_dir=tmp_path, detector=never)[0]
    assert item["detected"].tolist() == [t not in miss for t in range(len(gts))]
    np.testing.assert_allclose(item["boxes"][1].numpy(), landmark_box(gts[1]) + shift)


# ------------------------------------------------------------------------------------------------ Eq. 3.12
def test_eq_3_12_alpha_at_both_limits():
    """α is the detection's weight (Fig. 3.5's caption): a track that agrees with the detection and comes back to
    where it started gets the weight (α → α_min); a far or inconsistent track hands the point back (α → 1)."""
    f = FlowFusion(tau_fwd=0.06, tau_fb=0.02, alpha_min=0.05)
    det = np.stack([np.linspace(40, 60, 68), np.linspace(40, 70, 68)], 1)
    det[36], det[45] = (40.0, 50.0), (60.0, 50.0)  # inter-ocular distance d = 20 px
    ok = np.ones(68, bool)
    assert np.allclose(f.alpha(det, det, det, det, ok), 0.05)  # agreement: the track wins, up to α_min
    far = f.alpha(det + 20.0, det, det, det, ok)  # 1.41 d away: exp(−(1.41/0.06)²) = 0
    assert np.allclose(far, 1.0)
    assert np.allclose(f.alpha(det, det + 20.0, det, det, ok), 1.0)  # forward–backward inconsistent
    assert np.allclose(f.alpha(det, det, det, det, ~ok), 1.0)  # a lost track
    # the formula in between: α = 1 − exp(−(d_fwd/τ_fwd)² − (e_fb/τ_fb)²)
    a = f.alpha(det + [0.6, 0.0], det + [0.2, 0.0], det, det, ok)
    assert np.allclose(a, 1 - np.exp(-(0.03 / 0.06) ** 2 - (0.01 / 0.02) ** 2))
    # P = α·P_det + (1 − α)·P_track on a static textured image (the track stays put)
    rng = np.random.default_rng(0)
    import cv2

    img = cv2.GaussianBlur((rng.random((100, 100)) * 255).astype(np.uint8), (0, 0), 2)
    new_det = det + [0.6, 0.0]
    fused, alpha = f.step(img, img, det, new_det)
    np.testing.assert_allclose(fused, alpha[:, None] * new_det + (1 - alpha[:, None]) * det, atol=0.05)
    assert 0.05 < alpha.mean() < 0.3


# ------------------------------------------------------------------------------------------------ study
def _fake_run(root, job, method, metrics, noise="gaussian", sigma=0.0, loss="l2", sdd=None):
    d = root / str(job)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(
        f"model: {{method: {method}, training_data: '300-W', loss: {loss}}}\n"
        f"data: {{noise_type: {noise}, noise_sigma: {sigma}, noise_prob: {sigma}}}\n")
    (d / ".hydra" / "overrides.yaml").write_text(f"- +experiment={method}\n")
    (d / "final_metrics.json").write_text(json.dumps({"metrics": metrics}))
    if sdd is not None:
        np.savez(d / "stability.npz", **{"category1_detected/sdd": sdd, "category1_detected/sdd_videos": sdd[None]})


def test_study_tables_and_figures(tmp_path):
    from projects.facealign.study import StudyCallback, main

    m = lambda a, b: {"test/category1/nme": a, "test/category1_detected/nme": b, "test/full/nme": a}  # noqa: E731
    _fake_run(tmp_path, 0, "Ours-base", m(0.0513, 0.06), sdd=np.full((68, 2), 0.02))
    _fake_run(tmp_path, 1, "Ours-new", m(0.0460, 0.05), sdd=np.full((68, 2), 0.01))
    assert main([str(tmp_path)]) == 0
    tables = {t["title"]: t for t in json.loads((tmp_path / "study.json").read_text())}
    gt = tables["Table 3.2 / 3.4 layout: NME (%) on 300-VW, ground-truth box"]["rows"]
    assert [(r["Method"], r["Subset-1"]) for r in gt] == [("Ours-base", pytest.approx(5.13)),
                                                          ("Ours-new", pytest.approx(4.60))]
    det = tables["Table 3.2 / 3.4 layout: NME (%) on 300-VW, detector box"]["rows"]
    assert det[1]["Subset-1"] == pytest.approx(5.0) and det[1]["Subset-2"] is None
    assert (tmp_path / "fig3_10_category1_detected.png").is_file()
    assert (tmp_path / "fig3_10_300vw_detector_box.png").is_file()
    # Table 3.1 study from runs that differ in noise type and loss
    sweep = tmp_path / "t31"
    for job, (noise, loss, v) in enumerate([("bernoulli", "l2", 0.05), ("bernoulli", "modified_l2", 0.04),
                                            ("impulse", "l0", 0.045)]):
        _fake_run(sweep, job, "x", {"test/full/nme": v}, noise=noise, sigma=0.2, loss=loss)
    cfg = compose_config("facealign", "train", [], return_hydra_config=True)
    assert cfg.hydra.callbacks.study._target_ == "projects.facealign.study.StudyCallback"  # every multirun
    StudyCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    rows = {r["Noise Type"]: r for t in json.loads((sweep / "study.json").read_text())
            if t["title"].startswith("Table 3.1") for r in t["rows"]}
    assert rows["bernoulli"]["modified_l2"] == pytest.approx(4.0) and rows["bernoulli"]["l2"] == pytest.approx(5.0)
    assert rows["bernoulli"]["Table 3.1 loss"] == "modified_l2" and rows["impulse"]["l0"] == pytest.approx(4.5)
