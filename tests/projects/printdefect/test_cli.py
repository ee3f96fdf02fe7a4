"""Through the shared driver: train (features + tree) → test table, eval of the checkpoint with the ROC, infer on
a page and on a folder, one-line errors with exit code 2."""

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from projects.printdefect.model import BlockwiseDetector
from projects.printdefect.tree import fit_tree
from tests.helpers import run_cli, run_dir_of, run_ok, train_once

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(pd_data, tmp_path_factory):
    return train_once("printdefect", ["+experiment=smoke"], pd_data, tmp_path_factory.mktemp("pdlogs"))


def test_train_writes_table_and_a_weights_only_checkpoint(trained, pd_data):
    run_dir, _ = trained
    tables = json.loads((run_dir / "results.json").read_text())
    (row,) = tables[0]["rows"]
    metrics = json.loads((run_dir / "final_metrics.json").read_text())["metrics"]
    chosen = metrics["train/chosen_cost"]          # the cost of model.cost_grid with the fewest validation errors
    assert row["test set"] == "demo" and row["cost"] == chosen in (1.0, 2.0, 4.0, 8.0) and row["pages"] == 2
    assert metrics["val/pages"] == 2 and metrics["val/errors_per_page"] >= 0
    n = row["TP"] + row["FN"] + row["FP"] + row["TN"]
    assert n > 10 and row["TP"] > 0
    assert row["miss rate"] == pytest.approx(row["FN"] / (row["TP"] + row["FN"]))
    by_title = {t["title"].split(":")[0].split(" (")[0]: t for t in tables}
    assert [r["cost"] for r in by_title["ROC over the misclassification cost"]["rows"]] == [0.5, 2.0, 8.0]
    # the per-defect table counts the visible defects of the test pages' ground truth
    (summary,) = by_title["Per-defect evaluation"]["rows"]
    truth = [json.loads(p.read_text()) for p in sorted((pd_data / "printdefect_demo" / "test").glob("*.json"))]
    assert summary["visible"] == sum(d["visible"] for gt in truth for d in gt["defects"]) > 0
    assert summary["recall"] == pytest.approx(summary["found"] / summary["visible"])
    assert (run_dir / "roc_demo.png").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    sd = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    det = BlockwiseDetector(features=["size", "major", "minor", "severity", "excess"])
    det.load_state_dict(sd, strict=True)
    x, y = det.tree.fit_x.numpy(), det.tree.fit_y.numpy()
    assert len(y) == len(x) > 10 and 0 < y.sum() < len(y)
    clf = fit_tree(x, y, cost=chosen, max_depth=8, min_samples_leaf=5, random_state=0)
    probe = np.concatenate([x, x * 1.01 + 0.01])
    assert np.array_equal(det.tree.predict(probe), clf.predict(probe))


def test_eval_and_infer(trained, pd_data, tmp_path):
    run_dir, logs = trained
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    res = run_cli("projects.printdefect.eval", ["data=demo", f"ckpt_path={ckpt}", "model.roc_costs=[1,2]"],
                  pd_data, logs, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    chosen = json.loads((run_dir / "final_metrics.json").read_text())["metrics"]["train/chosen_cost"]
    assert f"| demo | {chosen:.4f} |" in res.stdout and "ROC over the misclassification cost" in res.stdout
    assert "Per-defect evaluation" in res.stdout
    out = tmp_path / "out"
    page = pd_data / "printdefect_demo" / "test" / "page_000.png"
    res = run_cli("projects.printdefect.infer", [f"ckpt_path={ckpt}", f"input={page.parent}", f"output={out}"],
                  pd_data, logs, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads((out / "page_000.json").read_text())
    gt = json.loads(page.with_suffix(".json").read_text())
    vec = rec["page_vector"]
    assert vec["n_defects"] == len(rec["detections"]) == vec["n_gray_spots"] + vec["n_solid_spots"]
    visible = [d for d in gt["defects"] if d["visible"]]
    hits = [d for d in visible if any(e["box"][0] <= d["center"][0] < e["box"][2] and
                                      e["box"][1] <= d["center"][1] < e["box"][3] for e in rec["detections"])]
    assert len(hits) >= len(visible) // 3, (len(hits), len(visible))
    for e in rec["detections"]:
        assert e["type"] == ("gray_spot" if e["kind"] == "light" else "solid_spot")
    rows = list(csv.DictReader((out / "pages.csv").open()))
    assert [r["page"] for r in rows] == ["page_000.png", "page_001.png"]
    assert cv2.imread(str(out / "page_000_defects.png")).shape[:2] == (rec["height"], rec["width"])


def test_infer_errors_are_one_line(trained, pd_data, tmp_path):
    run_dir, logs = trained
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    rgb = np.full((200, 300, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "nomask.png"), rgb)
    res = run_cli("projects.printdefect.infer", [f"ckpt_path={ckpt}", f"input={tmp_path / 'nomask.png'}",
                                                 f"output={tmp_path / 'o'}", "infer_options.dpi=600"],
                  pd_data, logs, tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"error: page has no mask: {tmp_path / 'nomask.png'} (expected an "
                                               "alpha channel or nomask_mask.png)"]
    assert not (tmp_path / "o").exists()


def test_infer_folder_with_a_corrupt_page_finishes_the_others(trained, pd_data, tmp_path):
    """A folder whose last page is corrupt: the good pages are written and listed in pages.csv, the bad one is
    named in one warning, in pages.csv's error column and in the single error line (exit 2); inputs untouched."""
    import shutil

    run_dir, logs = trained
    pages = tmp_path / "pages"
    shutil.copytree(pd_data / "printdefect_demo" / "test", pages)
    (pages / "page_009.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    before = {p.name: p.read_bytes() for p in pages.iterdir()}
    out = tmp_path / "out"
    res = run_cli("projects.printdefect.infer", [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                                 f"input={pages}", f"output={out}"], pd_data, logs, tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "1 of 3 inputs could not be processed (page_009.png)" in errors[0], errors
    assert any(ln.startswith("warning: skipped") and "page_009.png" in ln for ln in res.stderr.splitlines())
    rows = {r["page"]: r for r in csv.DictReader((out / "pages.csv").open())}
    assert list(rows) == ["page_000.png", "page_001.png", "page_009.png"]
    assert rows["page_009.png"]["error"] and not rows["page_000.png"]["error"]
    assert (out / "page_001.json").is_file() and not (out / "page_009.json").exists()
    assert {p.name: p.read_bytes() for p in pages.iterdir()} == before


def test_ddp_training_on_two_processes_fits_the_same_tree(trained, pd_data, tmp_path):
    """5 training pages (7 less the 2 validation pages) on 2 gloo ranks (3 + 2, the short rank padded so the
    per-step syncs line up): the gathered rows give the single-process tree, hence the same test confusion and the
    same validation scores (each rank analyses one of the 2 validation pages)."""
    run_dir, _ = trained
    run_ok("projects.printdefect.train", ["+experiment=smoke", "trainer=ddp_cpu", "model.roc_costs=null"], pd_data,
           tmp_path, timeout=300)
    ddp_dir = run_dir_of(tmp_path, "printdefect", "smoke")
    (one,), (two,) = (json.loads((d / "results.json").read_text())[0]["rows"] for d in (run_dir, ddp_dir))
    assert {k: two[k] for k in ("TP", "FN", "FP", "TN", "pages")} == {k: one[k] for k in ("TP", "FN", "FP", "TN",
                                                                                             "pages")}
    sd = torch.load(ddp_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    ref = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(sd["net.tree.fit_x"], ref["net.tree.fit_x"])
    one_m, two_m = (json.loads((d / "final_metrics.json").read_text())["metrics"] for d in (run_dir, ddp_dir))
    assert {k: v for k, v in two_m.items() if k.startswith("val/")} == \
        {k: v for k, v in one_m.items() if k.startswith("val/")} != {}
