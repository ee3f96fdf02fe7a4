"""Every printdefect config composes and ``model.net`` instantiates the bare detector."""

import pytest
from hydra.utils import instantiate

from projects.printdefect.model import BlockwiseDetector
from shared.run import compose_config

CASES = [("train", []), ("train", ["model=otsu"]), ("train", ["model=delta_e"]), ("train", ["+experiment=smoke"]),
         ("train", ["+experiment=ablation_cost"]), ("eval", ["+experiment=demo"]), ("infer", [])]


@pytest.mark.parametrize(("stage", "overrides"), CASES)
def test_configs_compose(stage, overrides):
    cfg = compose_config("printdefect", stage, overrides)
    net = instantiate(cfg.model.net)
    assert isinstance(net, BlockwiseDetector) and (net.block, net.shift) == (75, 35)
    assert net.sizes(300) == (38, 18) and net.sizes(600) == (75, 35)
    assert net.method == ("otsu" if "model=otsu" in overrides else "valley")
    assert net.channel == ("dE" if "model=delta_e" in overrides else "L")
