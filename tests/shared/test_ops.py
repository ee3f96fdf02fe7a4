import pytest
import torch
import torch.nn.functional as F

from shared.losses import CharbonnierLoss, CorrelationLoss, make_pixel_loss
from shared.ops import (
    ASPP,
    RRDB,
    FeaturePyramid,
    MultiScaleNonLocal,
    NonLocalBlock,
    PCDAlign,
    PixelShuffleUpsampler,
    ResidualBlockNoBN,
    ResidualDenseBlock,
    SequentialAtrous,
    correlation,
    make_context,
    make_layer,
    space_to_depth,
)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_rrdb_parameter_counts_match_esrgan():
    assert n_params(ResidualDenseBlock(64, 32)) == 239_808
    assert n_params(RRDB(64, 32)) == 719_424
    assert n_params(make_layer(RRDB, 20, nf=64, gc=32)) == 14_388_480


def test_residual_block_names_and_residual():
    blk = ResidualBlockNoBN(8)
    assert set(blk.state_dict()) == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        blk.conv2.weight.zero_()
        blk.conv2.bias.zero_()
    assert torch.equal(blk(x), x)


def test_aspp_equals_concat_of_dilated_convs():
    aspp = ASPP(8, (1, 3, 4))
    assert n_params(ASPP(64, (1, 3, 4))) == 123_136
    x = torch.randn(2, 8, 12, 12)
    branches = [F.conv2d(x, c.weight, c.bias, padding=d, dilation=d) for c, d in zip(aspp.branches, (1, 3, 4))]
    ref = F.conv2d(torch.cat(branches, 1), aspp.fuse.weight, aspp.fuse.bias)
    assert torch.allclose(aspp(x), ref, atol=1e-6)


def test_context_switch_and_shapes():
    x = torch.randn(1, 8, 10, 10)
    for kind in ("none", "aspp", "sequential", "nonlocal", "nonlocal_single"):
        assert make_context(kind, 8)(x).shape == x.shape
    assert isinstance(make_context("sequential", 8), SequentialAtrous)
    assert torch.equal(NonLocalBlock(8)(x), x)  # zero-initialised output projection
    with pytest.raises(ValueError):
        make_context("bogus")


def test_nonlocal_block_matches_naive_attention_in_any_chunking():
    torch.manual_seed(0)
    blk = NonLocalBlock(4, 2)
    torch.nn.init.normal_(blk.out.weight)
    x = torch.randn(1, 4, 5, 6)
    th, ph, g = (F.conv2d(x, c.weight, c.bias)[0].flatten(1) for c in (blk.theta, blk.phi, blk.g))
    y = torch.zeros(2, 30)
    for i in range(30):  # position i attends to every position j with weight softmax_j(θ_i · φ_j)
        w = torch.softmax(torch.stack([th[:, i] @ ph[:, j] for j in range(30)]), 0)
        y[:, i] = sum(w[j] * g[:, j] for j in range(30))
    ref = x + F.conv2d(y.view(1, 2, 5, 6), blk.out.weight, blk.out.bias)
    for chunk in (4096, 7, 1):
        blk.chunk = chunk
        assert torch.allclose(blk(x), ref, atol=1e-5)


def test_multiscale_nonlocal_is_strided_branches_fused_with_the_input():
    torch.manual_seed(0)
    m = MultiScaleNonLocal(4, scales=(2, 4)).eval()
    for blk in m.nonlocal_blocks:
        torch.nn.init.normal_(blk.out.weight)
    x = torch.randn(1, 4, 11, 13)
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    feats = [x]
    for branch, n_down in zip(range(2), (1, 2)):
        y = x
        for k in range(n_down):
            conv = m.down[branch][2 * k]
            y = lrelu(F.conv2d(y, conv.weight, conv.bias, stride=2, padding=1))
        assert y.shape[-2:] == ((11 + 2 ** n_down - 1) // 2 ** n_down, (13 + 2 ** n_down - 1) // 2 ** n_down)
        y = F.interpolate(m.nonlocal_blocks[branch](y), size=(11, 13), mode="bilinear", align_corners=False)
        feats.append(lrelu(F.conv2d(y, m.up[branch].weight, m.up[branch].bias, padding=1)))
    ref = F.conv2d(torch.cat(feats, 1), m.fuse.weight, m.fuse.bias)
    assert torch.allclose(m(x), ref, atol=1e-5)
    assert n_params(MultiScaleNonLocal(64)) == 213_696 > n_params(ASPP(64))  # "a large number of parameters"
    with pytest.raises(ValueError, match="powers of two"):
        MultiScaleNonLocal(4, scales=(3,))


def test_space_to_depth_matches_naive_loop_and_inverts_pixelshuffle():
    x = torch.randn(2, 3, 8, 12)
    y = space_to_depth(x, 4)
    naive = torch.empty(2, 3 * 16, 2, 3)
    for c in range(3):
        for i in range(4):
            for j in range(4):
                naive[:, c * 16 + i * 4 + j] = x[:, c, i::4, j::4]
    assert torch.equal(y, naive)
    assert torch.equal(F.pixel_shuffle(y, 4), x)


def test_icnr_pixelshuffle_starts_as_nearest_upsampling():
    up = PixelShuffleUpsampler(8, 4, act=False)
    x = torch.randn(1, 8, 5, 5)
    y = up(x)
    assert y.shape == (1, 8, 20, 20)
    # stage by stage each 2×2 output block repeats one value: ICNR removes the checkerboard at init
    first = up[1](up[0](x))
    assert torch.allclose(first[..., 0::2, 0::2], first[..., 1::2, 1::2])
    assert torch.allclose(first[..., 0::2, 0::2], first[..., 0::2, 1::2])
    assert n_params(PixelShuffleUpsampler(64, 4)) == 295_424


def _naive_correlation(x, k, d):
    b, c, h, w = x.shape
    x = x - x.mean(dim=(2, 3), keepdim=True)
    r = (k - 1) // 2
    out = torch.zeros(b, k * k, h, w, dtype=x.dtype)
    for n in range(b):
        for yy in range(h):
            for xx in range(w):
                for a, i in enumerate(range(-r, r + 1)):
                    for bb, j in enumerate(range(-r, r + 1)):
                        y2, x2 = yy - i * d, xx - j * d
                        if 0 <= y2 < h and 0 <= x2 < w:
                            out[n, a * k + bb, yy, xx] = (x[n, :, yy, xx] * x[n, :, y2, x2]).sum() / (k * k)
    return out


@pytest.mark.parametrize("k,d", [(3, 1), (3, 2), (5, 1)])
def test_correlation_matches_naive_loop(k, d):
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    assert torch.allclose(correlation(x, k, d), _naive_correlation(x, k, d), atol=1e-12)


def test_correlation_loss():
    x = torch.rand(1, 3, 8, 8)
    assert CorrelationLoss(3, 2)(x, x).item() == 0.0
    y = torch.rand(1, 3, 8, 8)
    ref = (correlation(x, 3, 2) - correlation(y, 3, 2)).abs().mean()
    assert CorrelationLoss(3, 2)(x, y).item() == pytest.approx(ref.item())


def test_charbonnier_known_values():
    a, b = torch.zeros(2, 3), torch.zeros(2, 3)
    assert CharbonnierLoss()(a, b).item() == pytest.approx(1e-3)  # sqrt(0 + eps²) with eps = 1e-3
    b[0, 0] = 3.0
    assert CharbonnierLoss(reduction="sum")(a, b).item() == pytest.approx(5 * 1e-3 + (9 + 1e-6) ** 0.5)
    with pytest.raises(ValueError):
        CharbonnierLoss(reduction="bogus")
    assert isinstance(make_pixel_loss("charbonnier"), CharbonnierLoss)


ZSM_BRANCH_NAMES = {
    "L3_offset_conv1": (64, 128), "L3_offset_conv2": (64, 64), "L3_dcnpack": (64, 64),
    "L2_offset_conv1": (64, 128), "L2_offset_conv2": (64, 128), "L2_offset_conv3": (64, 64),
    "L2_dcnpack": (64, 64), "L2_fea_conv": (64, 128), "L1_offset_conv1": (64, 128), "L1_offset_conv2": (64, 128),
    "L1_offset_conv3": (64, 64), "L1_dcnpack": (64, 64), "L1_fea_conv": (64, 128),
}


def test_pcd_branch_has_official_layout_and_count():
    pcd = PCDAlign(64, 8)
    sd = pcd.state_dict()
    for name, (o, i) in ZSM_BRANCH_NAMES.items():
        assert tuple(sd[f"{name}.weight"].shape) == (o, i, 3, 3)
    assert tuple(sd["L1_dcnpack.conv_offset_mask.weight"].shape) == (216, 64, 3, 3)
    # one branch of the official PCD_Align: 7 × 73,792 + 3 × 36,928 + 3 DCN × 161,560
    assert n_params(pcd) == 1_112_008
    assert n_params(PCDAlign(64, 8, cascade=True)) > n_params(pcd)


def test_pcd_runs_on_pyramid():
    pyr = FeaturePyramid(16, 3)
    a, b = pyr(torch.randn(2, 16, 16, 20)), pyr(torch.randn(2, 16, 16, 20))
    assert [t.shape[-2:] for t in a] == [(16, 20), (8, 10), (4, 5)]
    out = PCDAlign(16, 4, cascade=True)(a, b)
    assert out.shape == (2, 16, 16, 20)
    out.mean().backward()
