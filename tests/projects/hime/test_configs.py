"""Every HIME config composes, and the presets switch what the dissertation's tables switch."""

import pytest
from hydra.utils import instantiate

from shared.run import compose_config

MODELS = ["hime", "hime_p", "tiny", "table5_2_conv", "table5_2_dconv_lr", "table5_2_dconv_ref", "table5_3_average",
          "table5_3_max", "table5_3_cofa", "table5_5_rec", "table5_5_rec_cor", "table5_5_p_nocor", "table5_5_p",
          "fig5_19_cor_only"]


@pytest.mark.parametrize("experiment", ["celeba_x4", "celeba_x4_64", "celeba_x8", "smoke", "demo", "table5_4_ref0",
                                        "table5_4_ref1", "table5_4_ref3"])
def test_experiments_compose(experiment):
    cfg = compose_config("hime", "train", [f"+experiment={experiment}"])
    assert cfg.model.net.scale == cfg.data.scale == cfg.scale
    setting = (cfg.lr_size, cfg.scale)
    expected = {"celeba_x4": (32, 4), "celeba_x4_64": (64, 4), "celeba_x8": (16, 8)}.get(experiment)
    if expected:
        assert setting == expected
    if experiment.startswith("table5_4"):
        n = int(experiment[-1])
        assert setting == (16, 8) and cfg.data.num_refs == n and cfg.model.net.references == (n > 0)
    for stage in ("eval", "infer"):
        compose_config("hime", stage, [f"+experiment={experiment}"])


def test_model_presets_switch_the_ablations():
    nets, losses = {}, {}
    for m in MODELS:
        cfg = compose_config("hime", "train", ["+experiment=celeba_x8", f"model={m}"])
        nets[m] = cfg.model.net
        losses[m] = {k: v for k, v in cfg.model.loss_weights.items() if v}
    assert [nets[f"table5_2_{a}"].alignment for a in ("conv", "dconv_lr", "dconv_ref")] == ["conv", "dconv_lr",
                                                                                          "dconv_ref"]
    assert [nets[f"table5_3_{a}"].aggregation for a in ("average", "max", "cofa")] == ["average", "max", "cofa"]
    assert losses["table5_5_rec"] == {"rec": 1.0} and losses["table5_5_rec_cor"] == {"rec": 1.0, "cor": 0.1}
    assert losses["table5_5_p_nocor"] == {"rec": 1.0, "adv": 0.1, "per": 0.01}
    assert losses["table5_5_p"] == losses["hime_p"] == {"rec": 1.0, "adv": 0.1, "per": 0.01, "cor": 0.1}
    assert losses["fig5_19_cor_only"] == {"cor": 1.0}
    net = instantiate(nets["hime"])
    assert sum(p.numel() for p in net.parameters()) == 904_828  # ×8
    conv = instantiate(nets["table5_2_conv"])
    assert not hasattr(conv.rfa, "dcn") and hasattr(conv.rfa, "conv")


def test_infer_passes_refs_through():
    cfg = compose_config("hime", "infer", ["refs=/some/dir", "input=a.png", "output=b.png"])
    assert cfg.infer_options.refs == "/some/dir" and cfg.refs == "/some/dir"
    assert compose_config("hime", "infer").infer_options.refs is None
