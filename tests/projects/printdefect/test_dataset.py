"""The Blockwise Dataset through Lightning predict: one row per valid block with the metadata of the section."""

import csv
import json

import numpy as np
import pytest

from projects.printdefect.dataset import COLUMNS, main
from projects.printdefect.features import block_labels
from projects.printdefect.model import BlockwiseDetector
from projects.printdefect.page import read_page
from tests.helpers import run_ok


def test_blockwise_dataset(pd_data, tmp_path):
    pages = pd_data / "printdefect_demo" / "test"
    out = tmp_path / "blocks.csv"
    assert main([str(pages), str(out), "--accelerator", "cpu"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == COLUMNS
    first = pages / "page_000.png"
    mine = [r for r in rows if r["file"] == str(first)]
    page, gt = read_page(first), json.loads(first.with_suffix(".json").read_text())
    table = BlockwiseDetector().analyse(page.rgb, page.mask, page.dpi)
    valid = np.nonzero(table["valid"])[0]
    assert [int(r["block_index"]) for r in mine] == valid.tolist()
    boxes = np.stack([table["x0"], table["y0"], table["x1"], table["y1"]], 1)[valid]
    assert [int(r["label"]) for r in mine] == block_labels(boxes, gt["defects"]).tolist()
    for r in mine:
        cx, cy = (int(r["x0"]) + int(r["x1"])) / 2, (int(r["y0"]) + int(r["y1"])) / 2
        (reg,) = [g for g in gt["regions"] if g["box"][0] <= cx < g["box"][2] and g["box"][1] <= cy < g["box"][3]]
        assert r["color"] == reg["color"]
        assert (r["size"] != "") == (r["candidate"] == "1")
    assert {r["file"] for r in rows} == {str(pages / "page_000.png"), str(pages / "page_001.png")}
    assert main([str(tmp_path / "missing"), str(out)]) == 2


@pytest.mark.slow
def test_blockwise_dataset_on_two_processes_is_the_same_csv(pd_data, tmp_path):
    """`--devices 2` (2 gloo ranks, 7 pages → 4 + 3): every page analysed once, one CSV from rank 0, in page order —
    byte for byte the single-process file."""
    pages = pd_data / "printdefect_demo" / "train"
    assert main([str(pages), str(tmp_path / "one.csv"), "--accelerator", "cpu"]) == 0
    res = run_ok("projects.printdefect.dataset", [str(pages), str(tmp_path / "two.csv"), "--accelerator", "cpu",
                                                  "--devices", "2"], pd_data, tmp_path, timeout=300)
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert not list(tmp_path.glob("two.rank*"))
    assert res.stdout.count("blockwise dataset:") == 1
