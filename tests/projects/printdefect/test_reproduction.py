"""Validation is never a test set (issue 16): every training config of printdefect holds out validation pages from
its training folder by the documented seeded rule, and a validation page found in any configured test set (same
path or same bytes) is refused."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from projects.printdefect.data import list_pages
from projects.printdefect.page import write_page
from shared.errors import UserError
from shared.run import compose_config

TRAIN_CONFIGS = [[], ["+experiment=smoke"], ["+experiment=demo"], ["+experiment=cross_domain"]]


def _pages(folder, n, tag):
    """``n`` tiny labelled pages, each with different pixels (so no two have the same bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb = np.full((8, 8, 3), (tag * 37 + i * 11) % 256, np.uint8)
        write_page(folder / f"page_{i:03d}.png", rgb, np.ones((8, 8), bool), 600)
        (folder / f"page_{i:03d}.json").write_text('{"defects": []}')


def _layout(cfg):
    """Every folder the config names, filled with pages (the training folder with 15)."""
    _pages(Path(cfg.data.train_dir), 15, 0)
    for k, folder in enumerate(cfg.data.test_sets.values()):
        _pages(Path(folder), 4, k + 1)


@pytest.mark.parametrize("overrides", TRAIN_CONFIGS)
def test_validation_pages_are_held_out_training_pages_never_test_pages(overrides, tmp_path):
    cfg = compose_config("printdefect", "train", [*overrides, f"paths.data_dir={tmp_path}"])
    _layout(cfg)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    train, val = list(dm.train_set.pages), list(dm.val_set.pages)
    everything = sorted(list_pages(cfg.data.train_dir))
    # the documented rule, computed independently: a seeded permutation of the sorted training pages
    pick = set(np.random.default_rng(cfg.data.val_seed).permutation(len(everything))[:cfg.data.val_pages].tolist())
    assert val == [p for i, p in enumerate(everything) if i in pick] and len(val) == cfg.data.val_pages >= 1
    assert sorted(train + val) == everything and not set(train) & set(val)
    tests = {p.resolve() for folder in cfg.data.test_sets.values() for p in list_pages(folder)}
    assert tests and not {p.resolve() for p in val} & tests
    test_bytes = {p.read_bytes() for p in tests}
    assert not {p.read_bytes() for p in val} & test_bytes
    # the split depends on the set of pages and the seed only
    again = instantiate(cfg.data, _convert_="all")
    again.setup("fit")
    assert again.val_set.pages == val


def test_a_test_set_that_holds_a_validation_page_is_refused(tmp_path):
    cfg = compose_config("printdefect", "train", ["+experiment=smoke", f"paths.data_dir={tmp_path}"])
    _layout(cfg)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    held = dm.val_set.pages[0]
    # the training folder itself as a test set: refused by path
    same = instantiate(cfg.data, test_sets={"demo": cfg.data.train_dir}, _convert_="all")
    with pytest.raises(UserError, match="validation page .* is also in test set demo"):
        same.setup("fit")
    # a copy of a validation page under another name in a test set: refused by content
    shutil.copy(held, tmp_path / "printdefect_demo" / "test" / "copy.png")
    shutil.copy(held.with_suffix(".json"), tmp_path / "printdefect_demo" / "test" / "copy.json")
    with pytest.raises(UserError, match="is also in test set demo"):
        instantiate(cfg.data, _convert_="all").setup("fit")


def test_testing_alone_needs_no_training_pages(tmp_path):
    cfg = compose_config("printdefect", "eval", ["+experiment=demo", f"paths.data_dir={tmp_path}"])
    _pages(tmp_path / "printdefect_demo" / "test", 2, 1)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("test")                                         # the training folder does not exist
    assert dm.test_names == ["demo"] and len(dm.test_sets_[0]) == 2
    with pytest.raises(UserError, match="cannot hold out 15 of 15"):
        _pages(tmp_path / "printdefect_demo" / "train", 15, 0)
        instantiate(cfg.data, val_pages=15, _convert_="all").setup("fit")
