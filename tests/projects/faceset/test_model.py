"""sphere20a layout and parameter count, margin heads, multi-column aggregation (Eq. 2.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from projects.faceset.model import (
    FaceSetNet,
    MarginHead,
    MeanPool,
    MultiColumn,
    SphereNet,
    TimmBackbone,
    asoftmax_lambda,
    psi,
    sphere20a,
)
from shared.checkpoint import load_weights
from shared.errors import UserError


def _conv(cin: int, cout: int) -> int:
    return cin * cout * 9 + cout


def test_sphere20a_layout_and_parameter_count():
    net = sphere20a()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20 and all(c.kernel_size == (3, 3) for c in convs)
    assert [c.stride[0] for c in convs].count(2) == 4
    # by hand: stage-first convs + 2 convs per residual unit (units 1, 2, 4, 1), PReLU per conv, fc5 7·6·512 → 512
    conv = (_conv(3, 64) + 2 * _conv(64, 64) + _conv(64, 128) + 4 * _conv(128, 128) + _conv(128, 256)
            + 8 * _conv(256, 256) + _conv(256, 512) + 2 * _conv(512, 512))
    prelu = 64 * 3 + 128 * 5 + 256 * 9 + 512 * 3
    fc5 = 512 * 7 * 6 * 512 + 512
    assert (conv, prelu, fc5) == (11_655_424, 4_672, 11_010_560)
    assert sum(p.numel() for p in net.parameters()) == conv + prelu + fc5 == 22_670_656
    head = MarginHead(512, 10574)
    assert head.weight.numel() == 5_413_888  # fc6 of the CASIA model, no bias → 28.08 M in total


def test_sphere20a_forward_shapes():
    net = sphere20a().eval()
    with torch.no_grad():
        out = net.features(torch.zeros(1, 3, 112, 96))
        assert out.shape == (1, 512, 7, 6)
        assert net(torch.randn(2, 3, 112, 96)).shape == (2, 512)
    with pytest.raises(UserError, match="112×96"):
        net(torch.zeros(1, 3, 112, 112))


def test_lambda_schedule_values():
    # λ = max(5, 1500/(1 + 0.1·it)), it = global_step + 1
    assert asoftmax_lambda(0) == pytest.approx(1500 / 1.1)
    assert asoftmax_lambda(99) == pytest.approx(1500 / 11)
    assert asoftmax_lambda(999) == pytest.approx(1500 / 101)
    assert asoftmax_lambda(2989) == pytest.approx(5.0)
    assert asoftmax_lambda(10**6) == 5.0
    values = [asoftmax_lambda(s) for s in range(0, 5000, 7)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_psi_is_monotone_continuous_and_matches_cos_m_theta():
    theta = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    for m in (1, 2, 3, 4):
        p = psi(torch.cos(theta), m)
        d = p[1:] - p[:-1]
        assert (d <= 1e-9).all(), m
        assert d.abs().max() < 1e-2  # continuous (no jumps at kπ/m)
        assert p[0] == pytest.approx(1.0) and p[-1] == pytest.approx(1 - 2 * m)
        first = theta <= math.pi / m  # k = 0: ψ = cos(mθ)
        torch.testing.assert_close(p[first], torch.cos(m * theta[first]))
    c = torch.tensor([0.3], dtype=torch.float64)
    assert psi(c, 4).item() == pytest.approx(-(8 * 0.3**4 - 8 * 0.3**2 + 1) - 2)  # θ in [π/4, π/2): k = 1


def test_asoftmax_m1_is_plain_softmax_and_margin_lowers_target_logit():
    torch.manual_seed(0)
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    h1 = MarginHead(8, 5, "asoftmax", m=1)
    w = h1.weight / h1.weight.norm(dim=1, keepdim=True)
    torch.testing.assert_close(h1(x, y, step=0), x @ w.T)
    h4 = MarginHead(8, 5, "asoftmax", m=4)
    h4.load_state_dict(h1.state_dict())
    plain, marg = h4(x), h4(x, y, step=10**6)  # λ = 5
    lam = 5.0
    cos = (F.normalize(x) @ w.T)[torch.arange(6), y].double()
    theta = torch.acos(cos)
    k = torch.floor(4 * theta / math.pi)
    psi_ref = (-1) ** k * torch.cos(4 * theta) - 2 * k
    expect = x.norm(dim=1).double() * (lam * cos + psi_ref) / (1 + lam)
    torch.testing.assert_close(marg[torch.arange(6), y].double(), expect, rtol=1e-4, atol=1e-4)
    other = torch.ones_like(plain, dtype=torch.bool)
    other[torch.arange(6), y] = False
    torch.testing.assert_close(marg[other], plain[other])
    assert (marg[torch.arange(6), y] <= plain[torch.arange(6), y] + 1e-5).all()


def test_cosface_and_arcface_targets():
    torch.manual_seed(1)
    x, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 1])
    for kind, m in (("cosface", 0.35), ("arcface", 0.5)):
        h = MarginHead(8, 3, kind, m=m, s=30.0)
        cos = F.normalize(x) @ F.normalize(h.weight).T
        out = h(x, y)
        t = cos[torch.arange(4), y]
        ref = t - m if kind == "cosface" else torch.tensor(
            [math.cos(math.acos(v) + m) if math.acos(v) + m <= math.pi else v - m * math.sin(m) for v in t.tolist()])
        torch.testing.assert_close(out[torch.arange(4), y], 30 * ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(h(x), 30 * cos)
    with pytest.raises(UserError, match="unknown margin head"):
        MarginHead(8, 3, "triplet")


def test_multicolumn_parameter_counts():
    def count(mod):
        return sum(p.numel() for p in mod.parameters())

    # default layout: quality 512→4→1, content [V_i, α-mean] 1024→4→1
    assert count(MultiColumn(512)) == (512 * 4 + 4 + 4 + 1) + (1024 * 4 + 4 + 4 + 1) == 6_162
    assert count(MultiColumn(512, hidden=())) == 513 + 1025 == 1_538  # one FC per column
    assert count(MultiColumn(512, hidden=(6,), content_context=False)) == 2 * (512 * 6 + 6 + 6 + 1) == 6_170
    assert count(MeanPool(512)) == 0


@pytest.mark.parametrize("agg", [MultiColumn(16), MultiColumn(16, hidden=(), content_context=False), MeanPool(16)])
def test_set_descriptor_order_invariance_singletons_and_masks(agg):
    torch.manual_seed(2)
    feats = torch.randn(3, 5, 16)
    out = agg(feats)
    perm = torch.randperm(5)
    torch.testing.assert_close(agg(feats[:, perm]), out)
    one = agg(feats[:, :1])
    torch.testing.assert_close(one, F.normalize(feats[:, 0], dim=-1))
    # padding: a set of 2 padded to 5 with garbage equals the set of 2 alone
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[:, :2] = True
    padded = feats.clone()
    padded[:, 2:] = 1e3
    torch.testing.assert_close(agg(padded, mask), agg(feats[:, :2]))
    with pytest.raises(UserError, match="empty face set"):
        agg(feats, torch.zeros(3, 5, dtype=torch.bool))


def test_multicolumn_equation_2_1_against_a_loop():
    torch.manual_seed(3)
    agg = MultiColumn(8, hidden=(3,))
    feats = torch.randn(2, 4, 8)
    alpha, beta, v = agg.weights(feats)
    for b in range(2):
        num, den = torch.zeros(8), 0.0
        for i in range(4):
            a = torch.sigmoid(agg.quality(F.normalize(feats[b, i], dim=0)))[0]
            assert a.item() == pytest.approx(alpha[b, i].item(), abs=1e-6)
            num = num + alpha[b, i] * beta[b, i] * v[b, i]
            den = den + alpha[b, i] * beta[b, i]
        torch.testing.assert_close(agg(feats)[b], num / den)


def test_facesetnet_sets_and_loading_a_state_dict(tmp_path):
    torch.manual_seed(4)
    net = FaceSetNet(SphereNet((4, 8), (1, 1), 16), MultiColumn(16))
    imgs = torch.randn(2, 3, 3, 112, 96)
    with torch.no_grad():
        sets = net(imgs)
        feats = net(imgs.flatten(0, 1)).view(2, 3, 16)
    torch.testing.assert_close(sets, net.aggregate(feats))
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "m.ckpt")
    other = FaceSetNet(SphereNet((4, 8), (1, 1), 16), MultiColumn(16))
    holder = torch.nn.Module()
    holder.net = other
    load_weights(holder, str(tmp_path / "m.ckpt"))
    with torch.no_grad():
        torch.testing.assert_close(other(imgs), sets)


def test_timm_backbone_option(tmp_path):
    torch.manual_seed(5)
    bb = TimmBackbone("resnet10t", embedding_dim=32)
    assert bb(torch.randn(2, 3, 112, 96)).shape == (2, 32)
    torch.save(bb.body.state_dict(), tmp_path / "body.pth")
    again = TimmBackbone("resnet10t", embedding_dim=32, weights_path=str(tmp_path / "body.pth"))
    for (k, a), b in zip(bb.body.state_dict().items(), again.body.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(UserError, match="unknown timm model"):
        TimmBackbone("no_such_net")
    assert np.isfinite(bb(torch.randn(1, 3, 112, 96)).detach().numpy()).all()
