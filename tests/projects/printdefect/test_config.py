"""Every printdefect config composes and ``model.net`` instantiates the bare detector with its preset's settings."""

import pytest
from hydra.utils import instantiate

from projects.printdefect.features import FEATURES
from projects.printdefect.model import BlockwiseDetector
from shared.run import compose_config

CASES = [("train", []), ("train", ["model=chapter"]), ("train", ["model=otsu"]), ("train", ["model=delta_e"]),
         ("train", ["+experiment=smoke"]), ("train", ["+experiment=ablation_cost"]),
         ("train", ["+experiment=cross_domain"]), ("train", ["+experiment=cross_domain", "model=chapter"]),
         ("eval", ["+experiment=demo"]), ("infer", [])]
CHAPTER = ("model=chapter", "model=otsu", "model=delta_e")


@pytest.mark.parametrize(("stage", "overrides"), CASES)
def test_configs_compose(stage, overrides):
    cfg = compose_config("printdefect", stage, overrides)
    net = instantiate(cfg.model.net)
    assert isinstance(net, BlockwiseDetector) and (net.block, net.shift) == (75, 35)
    assert net.sizes(300) == (38, 18) and net.sizes(600) == (75, 35)
    chapter = any(o in overrides for o in CHAPTER)
    # the chapter's presets: footnote 1's window, no peak rule, Eq. 1.7/1.8 masks, the 7 features of the section
    assert (net.dde_low, net.dde_high, net.peak_low) == ((0.3, 2.0, None) if chapter else (0.3, None, 2.5))
    assert net.method == ("otsu" if "model=otsu" in overrides else "valley" if chapter else "fwhm")
    assert net.channel == ("dE" if "model=delta_e" in overrides else "L")
    assert net.features == (FEATURES if chapter else ("size", "major", "minor", "severity", "excess"))
    assert tuple(net.tree.fit_x.shape) == (0, len(net.features))
    assert net.min_contrast == (None if chapter else 3.0) and net.min_area_mm2 == (None if chapter else 0.04)
    if "model" in cfg and stage != "infer":
        assert cfg.model.faint_label == ("negative" if chapter else "ignore")
    if stage == "train":
        assert cfg.monitor.metric == "val/errors_per_page" and cfg.data.val_pages >= 1
