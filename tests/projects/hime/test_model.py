"""HIME network: Table 5.1 size and cost, any number of references, set invariance, RFA/CoFA against hand
computations."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from projects.hime.macs import count_macs
from projects.hime.model import HIME, RFA, CoFA
from shared.imresize import imresize
from shared.ops.deform import ModulatedDeformConv2d


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def layout_params(scale: int, nf: int = 32, k_l: int = 5, k_h: int = 3, k_r: int = 20, groups: int = 8,
                  offset_blocks: int = 10) -> int:
    """The documented layout, counted by hand (README 'Layout')."""
    block = 2 * conv(nf, nf)
    lr = conv(3, nf) + k_l * block
    hr = conv(3, 1, 1) + conv(scale * scale, nf) + k_h * block
    rfa = conv(2 * nf, nf) + offset_blocks * block + conv(nf, nf) + conv(nf, 3 * groups * 9) + conv(nf, nf)
    cofa = 2 * conv(nf, nf)
    rec = k_r * block + conv(nf, nf) + conv(nf, 3 * scale * scale)
    return lr + hr + rfa + cofa + rec


@pytest.mark.parametrize("scale,paper", [(4, 0.87e6), (8, 0.90e6)])
def test_parameter_count_matches_layout_and_table_5_1(scale, paper):
    net = HIME(scale=scale, offset_blocks=10)
    assert n_params(net) == layout_params(scale)
    assert n_params(net) == {4: 849_388, 8: 904_828}[scale]
    assert abs(n_params(net) - paper) / paper < 0.03  # Table 5.1: 0.87M (×4), 0.90M (×8)


@pytest.mark.parametrize("lr_size,scale,paper", [(32, 4, 1.86), (64, 4, 7.48), (16, 8, 0.49)])
def test_gmacs_match_table_5_1(lr_size, scale, paper):
    net = HIME(scale=scale, offset_blocks=10)
    lr, refs = torch.zeros(1, 3, lr_size, lr_size), torch.zeros(1, 3, 3, lr_size * scale, lr_size * scale)
    gmacs = count_macs(net, lr, refs) / 1e9
    assert abs(gmacs - paper) / paper < 0.02, gmacs


def test_mac_counter_against_hand_count():
    conv2d, lin = nn.Conv2d(4, 6, 3, padding=1), nn.Linear(10, 7)
    assert count_macs(conv2d, torch.zeros(2, 4, 5, 5)) == 2 * 6 * 4 * 9 * 25
    assert count_macs(lin, torch.zeros(3, 10)) == 3 * 70
    dcn = ModulatedDeformConv2d(8, 8, 3, 1, 1, deformable_groups=2, cond_channels=4)
    x, cond = torch.zeros(1, 8, 6, 6), torch.zeros(1, 4, 6, 6)
    assert count_macs(dcn, x, cond) == 36 * (8 * 8 * 9 + 4 * 54 * 9)  # main conv + offset/mask conv


def tiny(**kw) -> HIME:
    torch.manual_seed(0)
    args = {"scale": 4, "nf": 8, "lr_blocks": 1, "hr_blocks": 1, "rec_blocks": 1, "deformable_groups": 2,
            "offset_blocks": 1, **kw}
    return HIME(**args).eval()


def randomise(net: nn.Module) -> nn.Module:
    """Non-zero offsets/masks and ICNR-free weights so every path of the network matters."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return net


@pytest.mark.parametrize("n", range(6))
def test_any_number_of_references(n):
    net = tiny()
    lr, refs = torch.rand(2, 3, 8, 8), torch.rand(2, n, 3, 32, 32)
    assert net(lr, refs).shape == (2, 3, 32, 32)


def test_zero_references_is_the_no_reference_path():
    net = randomise(tiny())
    lr = torch.rand(1, 3, 8, 8)
    out0 = net(lr, torch.zeros(1, 0, 3, 32, 32))
    assert torch.equal(out0, net(lr, None))
    assert not torch.allclose(out0, net(lr, torch.rand(1, 2, 3, 32, 32)))  # references do change the output
    base = HIME(scale=4, nf=8, lr_blocks=1, hr_blocks=1, rec_blocks=1, references=False)
    assert not hasattr(base, "rfa") and not hasattr(base, "cofa") and not hasattr(base, "hr_extractor")
    assert base(lr, torch.rand(1, 3, 3, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("aggregation,alignment", [("cofa", "dconv_lr"), ("average", "dconv_ref"),
                                                   ("max", "conv")])
def test_output_invariant_to_reference_order(aggregation, alignment):
    net = randomise(tiny(aggregation=aggregation, alignment=alignment))
    lr, refs = torch.rand(2, 3, 8, 8), torch.rand(2, 4, 3, 32, 32)
    out = net(lr, refs)
    for perm in [(3, 1, 0, 2), (1, 2, 3, 0)]:
        torch.testing.assert_close(net(lr, refs[:, list(perm)]), out, atol=1e-5, rtol=1e-5)


def test_cofa_equals_eq_5_4_to_5_6_by_loops():
    torch.manual_seed(0)
    cofa = CoFA(4)
    f_refa, f_lr = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 4, 5, 5)
    e2 = cofa.g2(f_lr)
    expected = torch.zeros(2, 4, 5, 5)
    for b, y, x in itertools.product(range(2), range(5), range(5)):
        mus = []
        for i in range(3):
            e1 = cofa.g1(f_refa[b, i : i + 1])[0]
            mus.append(torch.sigmoid(torch.dot(e1[:, y, x], e2[b, :, y, x])))
        mus = torch.stack(mus)
        expected[b, :, y, x] = (mus[:, None] * f_refa[b, :, :, y, x]).sum(0) / mus.sum()
    torch.testing.assert_close(cofa(f_refa, f_lr), expected, atol=1e-5, rtol=1e-5)
    # Table 5.3 alternatives
    torch.testing.assert_close(CoFA(4, "average")(f_refa, f_lr), f_refa.sum(1) / 3)
    torch.testing.assert_close(CoFA(4, "max")(f_refa, f_lr), torch.maximum(torch.maximum(f_refa[:, 0], f_refa[:, 1]),
                                                                           f_refa[:, 2]))
    assert torch.equal(cofa(f_refa[:, :0], f_lr), torch.zeros_like(f_lr))


def test_cofa_survives_saturated_scores():
    cofa = CoFA(2)
    with torch.no_grad():
        cofa.g1.weight.fill_(0)
        cofa.g1.bias.fill_(-100.0)  # σ(z) underflows to 0 for every reference
        cofa.g2.weight.fill_(0)
        cofa.g2.bias.fill_(1.0)
    f_refa = torch.randn(1, 2, 2, 3, 3)
    out = cofa(f_refa, torch.randn(1, 2, 3, 3))
    torch.testing.assert_close(out, f_refa.mean(1))  # equal scores → plain mean, no 0/0


def test_rfa_samples_reference_features_with_predicted_offsets():
    torch.manual_seed(0)
    rfa = RFA(4, deformable_groups=2, offset_blocks=0)
    f_ref, f_ref_lr, f_lr = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    # zero-initialised offset/mask conv: no offset, mask σ(0) = 0.5 → a plain conv of F_ref at half strength
    expected = 0.5 * F.conv2d(f_ref, rfa.dcn.weight, None, padding=1) + rfa.dcn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(rfa(f_ref, f_ref_lr, f_lr), expected, atol=1e-5, rtol=1e-5)
    # an offset of exactly +1 pixel in x on every tap = the same conv on F_ref shifted left by one pixel
    with torch.no_grad():
        com = rfa.dcn.conv_offset_mask
        com.weight.zero_()
        com.bias.zero_()
        n_off = com.out_channels * 2 // 3
        com.bias[1:n_off:2] = 1.0  # (dy, dx) pairs: dx = 1
        com.bias[n_off:] = 50.0  # mask ≈ 1
    # output x reads F_ref at x-1+1, x+1, x+1+1 (zeros outside): a valid conv over F_ref padded (0, 2) in x
    expected = F.conv2d(F.pad(f_ref, (0, 2, 1, 1)), rfa.dcn.weight, rfa.dcn.bias)
    torch.testing.assert_close(rfa(f_ref, f_ref_lr, f_lr), expected, atol=1e-4, rtol=1e-4)
    # Table 5.2 (c): offsets from [F_ref, F_L] → F_refL does not matter; (b): it does
    rfa_ref = RFA(4, 2, 0, "dconv_ref")
    assert rfa_ref.offset_net[0].in_channels == 8


def test_offsets_follow_the_chosen_guide():
    torch.manual_seed(0)
    for alignment, guide_matters in (("dconv_lr", True), ("dconv_ref", False)):
        rfa = randomise(RFA(4, 2, 1, alignment))
        f_ref, f_lr = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
        a = rfa(f_ref, torch.randn(1, 4, 6, 6), f_lr)
        b = rfa(f_ref, torch.randn(1, 4, 6, 6), f_lr)
        assert (not torch.allclose(a, b)) == guide_matters
    # (a) "common convolution of the same kernel size": the same g on [F_refL, F_L], a 3×3 conv on [F_ref, g]
    plain = randomise(RFA(4, 2, 1, alignment="conv"))
    f_ref, f_ref_lr, f_lr = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    g = plain.offset_net(torch.cat([f_ref_lr, f_lr], 1))
    expected = F.conv2d(torch.cat([f_ref, g], 1), plain.conv.weight, plain.conv.bias, padding=1)
    torch.testing.assert_close(plain(f_ref, f_ref_lr, f_lr), expected)
    assert not hasattr(plain, "dcn") and n_params(RFA(4, 2, 1, "dconv_lr")) - n_params(plain) == (
        (4 * 4 * 9 + 4 + conv(4, 3 * 2 * 9)) - conv(8, 4))  # DCN (main + offset/mask conv) vs a 3×3 conv 8→4


def test_bicubic_long_skip_and_scales():
    for scale, size in ((2, 6), (4, 6), (8, 6), (16, 3), (64, 2)):
        net = HIME(scale=scale, nf=8, lr_blocks=1, hr_blocks=1, rec_blocks=1, deformable_groups=2, offset_blocks=0)
        with torch.no_grad():
            net.upsample[0].weight.zero_()  # R(F_f) = 0 → the output is the bicubic upscale of the input
        lr = torch.rand(1, 3, size, size)
        out = net(lr, torch.rand(1, 2, 3, size * scale, size * scale))
        # the long skip is MATLAB bicubic ↑s, the kernel that made the LR (shared.imresize, tested against MATLAB)
        torch.testing.assert_close(out, imresize(lr, float(scale)))
    with pytest.raises(ValueError, match="power of two"):
        HIME(scale=3)
    with pytest.raises(ValueError, match="references must be 4×"):
        tiny()(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 3, 16, 16))
    assert HIME(scale=4, nf=8, upsampler="progressive", lr_blocks=1, hr_blocks=1, rec_blocks=1,
                deformable_groups=2)(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_reference_gradients_reach_every_branch():
    net = tiny()
    out = net(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 3, 32, 32))
    out.square().mean().backward()
    names = ("hr_extractor.conv_first.weight", "rfa.dcn.weight", "cofa.g1.weight", "lr_extractor.conv_first.weight")
    for name in names:
        assert net.get_parameter(name).grad.abs().sum() > 0, name


def test_icnr_upsampler_starts_without_checkerboard():
    net = HIME(scale=4, nf=8, lr_blocks=1, hr_blocks=1, rec_blocks=1, deformable_groups=2, offset_blocks=0)
    out = net.upsample(torch.randn(1, 8, 5, 5))  # 1×3×20×20: every 4×4 block is one value (nearest upsampling)
    blocks = out.view(1, 3, 5, 4, 5, 4)
    torch.testing.assert_close(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    assert out.abs().max() > 0
