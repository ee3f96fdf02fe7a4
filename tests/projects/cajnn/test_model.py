import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from projects.cajnn.model import CAJNN
from shared.run import compose_config


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_default_matches_reported_14_8m():
    # conv 1,792 + ASPP 123,136 + 20 RRDB 14,388,480 + 2×(conv 64→256 + PS) 295,424 + 36,928 + 1,731
    assert n_params(CAJNN()) == 14_847_491
    assert abs(n_params(CAJNN()) - 14.8e6) / 14.8e6 < 0.01


def test_ablation_variants_counts():
    assert n_params(CAJNN(trunk_conv=True)) == 14_847_491 + 36_928
    assert n_params(CAJNN(context="none")) == 14_847_491 - 123_136
    # up-convolution = two 4×4 transposed convs 64→64 (2 × 65,600) instead of two conv 64→256 (2 × 147,712)
    assert n_params(CAJNN(upsampler="upconv")) == 14_847_491 - 295_424 + 2 * (64 * 64 * 16 + 64)
    assert n_params(CAJNN(upsampler="nearest_conv")) == 14_847_491 - 295_424 + 2 * 36_928
    # multi-scale non-local: 3 strided convs + 2 non-local blocks (3 embeddings 64→32, output 32→64) + 2 convs after
    # the upsampling + 1×1 fusion of 3·64 → 64, instead of ASPP's 123,136
    nonlocal_ = 3 * 36_928 + 2 * (3 * (64 * 32 + 32) + 32 * 64 + 64) + 2 * 36_928 + (192 * 64 + 64)
    assert n_params(CAJNN(context="nonlocal")) == 14_847_491 - 123_136 + nonlocal_


def test_config_builds_the_paper_network():
    cfg = compose_config("cajnn", "train", ["+experiment=div2k"])
    assert n_params(instantiate(cfg.model.net)) == 14_847_491


def test_forward_shape_and_long_skip():
    net = CAJNN(nf=8, gc=4, n_blocks=1)
    x = torch.rand(2, 3, 10, 12)
    assert net(x).shape == (2, 3, 40, 48)
    with torch.no_grad():
        net.conv_last.weight.zero_()
        net.conv_last.bias.zero_()
    # with the residual branch silenced, the output is the bilinear ×4 of the input (Eq. 4.5)
    assert torch.allclose(net(x), F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False))


def test_bad_options():
    with pytest.raises(ValueError, match="upsampler"):
        CAJNN(upsampler="bogus")
    with pytest.raises(ValueError, match="scales"):
        CAJNN(scale=3)
