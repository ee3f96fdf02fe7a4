"""CAJNN entry points: eval with baseline and self-ensemble rows, inference on odd formats, bad files."""

import json

import cv2
import numpy as np
import pytest

from shared.io import read_image
from tests.helpers import run_cli, run_dir_of, train_once

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ckpt(demo_data, tmp_path_factory):
    run_dir, _ = train_once("cajnn", ["+experiment=smoke", "callbacks.rich_progress_bar=null", "test_after_fit=false"],
                            demo_data, tmp_path_factory.mktemp("cajnnlogs"))
    return run_dir / "checkpoints" / "last.ckpt"


def test_eval_table_has_bicubic_and_self_ensemble_rows(ckpt, demo_data, tmp_path):
    res = run_cli("projects.cajnn.eval", ["model=tiny", "data=demo", f"ckpt_path={ckpt}", "data.test_qualities=[10,40]",
                                          "model.self_ensemble_test=true", "model.save_test_images=1"],
                  demo_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = run_dir_of(tmp_path / "logs", "cajnn", "eval")
    table = json.loads((run_dir / "results.json").read_text())[0]
    methods = [(r["QF"], r["Method"]) for r in table["rows"]]
    assert methods == [(10, "Bicubic"), (10, "CAJNN"), (10, "CAJNN (self-ensembled)"),
                       (40, "Bicubic"), (40, "CAJNN"), (40, "CAJNN (self-ensembled)")]
    assert all(r["demo PSNR"] > 10 for r in table["rows"])
    assert sorted(p.name for p in (run_dir / "images").iterdir()) == [
        "demo_q10_000.png", "demo_q10_000_crops.png", "demo_q40_000.png", "demo_q40_000_crops.png"]
    crops = read_image(run_dir / "images" / "demo_q10_000_crops.png")  # input | Bicubic | CAJNN | self-ens. | truth
    assert crops.shape[1] > 4 * crops.shape[0] // 2


def test_infer_handles_gray_rgba_webp_and_tiles(ckpt, demo_data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    img = (rng.random((40, 52, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(src / "gray.png"), img[..., 0])
    cv2.imwrite(str(src / "rgba.png"), np.dstack([img, np.full(img.shape[:2], 128, np.uint8)]))
    cv2.imwrite(str(src / "photo.webp"), img)
    out = tmp_path / "out"
    res = run_cli("projects.cajnn.infer", ["model=tiny", f"ckpt_path={ckpt}", f"input={src}", f"output={out}",
                                           "model.infer_tile=24", "model.infer_tile_overlap=8"],
                  demo_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gray.png", "photo.png", "rgba.png"]
    assert read_image(out / "photo.png").shape == (160, 208, 3)


def test_infer_corrupt_file_is_one_line_and_writes_nothing(ckpt, demo_data, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    res = run_cli("projects.cajnn.infer", ["model=tiny", f"ckpt_path={ckpt}", f"input={bad}", f"output={out}"],
                  demo_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 2 and "cannot decode image" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli("projects.cajnn.infer", ["model=tiny", f"ckpt_path={ckpt}", f"input={empty}", f"output={out}"],
                  demo_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 2 and "no images found" in res.stderr
