"""One optimisation step lowers the loss (backbone and aggregation stages); the aggregation stage keeps the
backbone frozen; backbone weights load from a state dict the test makes; composed configs instantiate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from projects.faceset.model import FaceSetNet, MeanPool, MultiColumn, SphereNet
from projects.faceset.module import FaceSetModule, load_backbone
from shared.errors import UserError
from shared.run import compose_config


def _net(agg=None):
    return FaceSetNet(SphereNet((8, 16, 16, 32), (1, 1, 1, 1), 32), agg or MeanPool(32))


def _loss(module, batch):
    desc = module.descriptors(batch)
    return F.cross_entropy(module.head(desc, batch["label"], 0), batch["label"])


@pytest.mark.parametrize("kind", ["asoftmax", "cosface", "arcface"])
def test_one_backbone_step_lowers_the_loss(kind):
    torch.manual_seed(0)
    module = FaceSetModule(_net(), head={"kind": kind, "m": 4 if kind == "asoftmax" else 0.2, "s": 16.0},
                           num_classes=5, optimizer={"lr": 1e-3})
    batch = {"image": torch.randn(10, 3, 112, 96), "label": torch.arange(10) % 5}
    opt = module.configure_optimizers()
    before = _loss(module, batch)
    before.backward()
    opt.step()
    with torch.no_grad():
        assert _loss(module, batch) < before


def test_aggregation_step_lowers_the_loss_and_keeps_the_backbone_frozen(tmp_path):
    torch.manual_seed(1)
    trained = _net()
    torch.save(trained.backbone.state_dict(), tmp_path / "backbone.pth")
    module = FaceSetModule(_net(MultiColumn(32, hidden=(4,))), stage="aggregation", num_classes=4,
                           backbone_ckpt=str(tmp_path / "backbone.pth"), optimizer={"lr": 0.5})
    for a, b in zip(module.net.backbone.state_dict().values(), trained.backbone.state_dict().values()):
        assert torch.equal(a, b)
    module.train()
    assert not module.net.backbone.training and module.net.aggregator.training
    frozen = {k: v.clone() for k, v in module.net.backbone.state_dict().items()}
    batch = {"images": torch.randn(8, 3, 3, 112, 96), "label": torch.arange(8) % 4}
    opt = module.configure_optimizers()
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in [*module.net.aggregator.parameters(), *module.head.parameters()]}
    before = _loss(module, batch)
    before.backward()
    opt.step()
    with torch.no_grad():
        assert _loss(module, batch) < before
    for k, v in module.net.backbone.state_dict().items():
        assert torch.equal(v, frozen[k]), k


def test_backbone_loading_accepts_lightning_and_net_state_dicts(tmp_path):
    src = _net()
    torch.save({"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "a.ckpt")
    torch.save(src.state_dict(), tmp_path / "b.pth")
    for f in ("a.ckpt", "b.pth"):
        dst = _net()
        load_backbone(dst, tmp_path / f)
        assert torch.equal(dst.backbone.fc5.weight, src.backbone.fc5.weight)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="does not fit SphereNet"):
        load_backbone(_net(), tmp_path / "bad.pth")
    with pytest.raises(UserError, match="model.stage"):
        FaceSetModule(_net(), stage="both")


@pytest.mark.parametrize("overrides,params", [
    (["model=sphereface"], 22_670_656),
    (["model=multicolumn"], 22_670_656 + 6_162),
    (["+experiment=smoke"], None),
    (["+experiment=smoke_multicolumn"], None),
])
def test_configs_compose_and_instantiate(overrides, params):
    cfg = compose_config("faceset", "train", overrides)
    net = instantiate(cfg.model.net)
    if params is not None:
        assert sum(p.numel() for p in net.parameters()) == params
    assert cfg.model.stage == ("aggregation" if "multicolumn" in str(overrides) else "backbone")
    for stage in ("eval", "infer"):
        compose_config("faceset", stage, overrides)


def test_timm_backbone_config():
    timm_cfg = compose_config("faceset", "train", ["model=timm_resnet", "model.net.backbone.name=resnet10t"])
    assert instantiate(timm_cfg.model.net).embed(torch.randn(1, 3, 112, 96)).shape == (1, 512)


@pytest.mark.slow
def test_paper_size_training_step_on_cpu():
    """sphere20a + A-Softmax over 10,574 classes (the CASIA head): one step runs and gives finite gradients."""
    torch.manual_seed(0)
    cfg = compose_config("faceset", "train", ["model.num_classes=10574"])
    module = instantiate(cfg.model, _convert_="all")
    assert sum(p.numel() for p in module.parameters()) == 22_670_656 + 512 * 10574
    batch = {"image": torch.randn(2, 3, 112, 96), "label": torch.tensor([3, 10573])}
    loss = _loss(module, batch)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in module.parameters())
