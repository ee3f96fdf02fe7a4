import pytest
import torch
import torch.nn.functional as F
import torchvision

from shared.ops.deform import ModulatedDeformConv2d, deform_conv2d

CASES = [
    # b, cin, cout, h, w, (kh, kw), stride, padding, dilation, groups, offset_groups, modulated
    (2, 8, 6, 9, 11, (3, 3), 1, 1, 1, 1, 2, True),
    (1, 6, 4, 7, 8, (3, 3), 2, 2, 2, 2, 3, True),
    (2, 4, 4, 5, 6, (1, 1), 1, 0, 1, 1, 1, False),
    (1, 4, 6, 6, 5, (2, 3), 1, (1, 0), 1, 2, 2, True),
    (1, 16, 8, 12, 10, (3, 3), (1, 2), (1, 1), (2, 1), 4, 8, False),
]


def _inputs(case, dtype=torch.float64, scale=3.0, seed=0):
    b, cin, cout, h, w, (kh, kw), s, p, d, g, og, m = case
    gen = torch.Generator().manual_seed(seed)
    s2, p2, d2 = ((v, v) if isinstance(v, int) else v for v in (s, p, d))
    ho = (h + 2 * p2[0] - (d2[0] * (kh - 1) + 1)) // s2[0] + 1
    wo = (w + 2 * p2[1] - (d2[1] * (kw - 1) + 1)) // s2[1] + 1
    x = torch.randn(b, cin, h, w, generator=gen, dtype=dtype)
    off = torch.randn(b, 2 * og * kh * kw, ho, wo, generator=gen, dtype=dtype) * scale
    wt = torch.randn(cout, cin // g, kh, kw, generator=gen, dtype=dtype)
    bias = torch.randn(cout, generator=gen, dtype=dtype)
    mask = torch.rand(b, og * kh * kw, ho, wo, generator=gen, dtype=dtype) if m else None
    return x, off, wt, bias, s, p, d, mask


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_torchvision(case):
    x, off, wt, bias, s, p, d, mask = _inputs(case)
    ours = deform_conv2d(x, off, wt, bias, s, p, d, mask, backend="native")
    ref = torchvision.ops.deform_conv2d(x, off, wt, bias, s, p, d, mask)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() < 1e-10


def test_float32_reference_layer_within_1e4():
    """The issue's layer: 64→64, 3×3, 8 offset groups (at 32×32 to stay fast)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 64, 32, 32, generator=gen)
    off = torch.randn(1, 144, 32, 32, generator=gen) * 2
    mask = torch.rand(1, 72, 32, 32, generator=gen)
    w = torch.randn(64, 64, 3, 3, generator=gen) * 0.05
    ours = deform_conv2d(x, off, w, None, 1, 1, 1, mask, backend="native")
    ref = torchvision.ops.deform_conv2d(x, off, w, None, 1, 1, 1, mask)
    assert (ours - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("case", CASES[:4])
def test_gradients_match_torchvision(case):
    tensors = _inputs(case)
    x, off, wt, bias, s, p, d, mask = tensors
    leaves = [t for t in (x, off, wt, bias, mask) if t is not None]
    grads = []
    for backend in ("native", "torchvision"):
        ls = [t.clone().requires_grad_() for t in leaves]
        xx, oo, ww, bb, *mm = ls
        out = deform_conv2d(xx, oo, ww, bb, s, p, d, mm[0] if mm else None, backend=backend)
        out.backward(torch.cos(out.detach()))
        grads.append([t.grad for t in ls])
    for g_ours, g_ref in zip(*grads):
        assert (g_ours - g_ref).abs().max() < 1e-8


def test_gradcheck_native():
    case = (1, 4, 2, 5, 5, (3, 3), 1, 1, 1, 2, 2, True)
    x, off, wt, bias, s, p, d, mask = _inputs(case, scale=0.7)
    # keep sampling points away from integer coordinates, where bilinear interpolation has kinks
    off = off.round() + 0.3

    def f(x, off, wt, bias, mask):
        return deform_conv2d(x, off, wt, bias, s, p, d, mask, backend="native")

    args = [t.requires_grad_() for t in (x, off, wt, bias, mask)]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


def test_integer_offset_is_a_shift():
    """Independent check: a 1×1 identity kernel with offset (dy, dx) = (1, -2) reads x[y+1, x-2] (0 outside)."""
    x = torch.arange(1 * 2 * 6 * 7, dtype=torch.float64).view(1, 2, 6, 7)
    w = torch.eye(2, dtype=torch.float64).view(2, 2, 1, 1)
    off = torch.zeros(1, 2, 6, 7, dtype=torch.float64)
    off[:, 0], off[:, 1] = 1.0, -2.0
    out = deform_conv2d(x, off, w, backend="native")
    expected = torch.zeros_like(x)
    expected[:, :, :5, 2:] = x[:, :, 1:, :5]
    assert torch.allclose(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_runs_in_fp32_and_keeps_dtype(dtype):
    x, off, wt, bias, s, p, d, mask = _inputs(CASES[0], dtype=torch.float32)
    ref = torchvision.ops.deform_conv2d(x, off, wt, bias, s, p, d, mask)
    args = [t.to(dtype) if t is not None else None for t in (x, off, wt, bias)]
    out = deform_conv2d(*args, s, p, d, mask.to(dtype), backend="native")
    assert out.dtype == dtype
    rel = (out.float() - ref).abs().max() / ref.abs().max()
    assert rel < 0.05


def test_module_layout_and_zero_init():
    m = ModulatedDeformConv2d(64, 64, 3, 1, 1, deformable_groups=8)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"weight": (64, 64, 3, 3), "bias": (64,), "conv_offset_mask.weight": (216, 64, 3, 3),
                      "conv_offset_mask.bias": (216,)}
    assert sum(p.numel() for p in m.parameters()) == 161_560  # official DCN_sep
    x, cond = torch.randn(1, 64, 10, 10), torch.randn(1, 64, 10, 10)
    with torch.no_grad():
        m.bias.normal_()
        # zero-initialised offsets and mask logits: a plain conv scaled by sigmoid(0) = 0.5
        expected = 0.5 * F.conv2d(x, m.weight, None, 1, 1) + m.bias.view(1, -1, 1, 1)
        assert torch.allclose(m(x, cond), expected, atol=1e-5)


def test_module_uses_chunk_split_and_clamp():
    m = ModulatedDeformConv2d(4, 4, 3, 1, 1, deformable_groups=1, cond_channels=3, max_offset=2.0)
    with torch.no_grad():
        m.conv_offset_mask.bias[:18] = 5.0  # offsets (chunks 1 and 2) = +5 → clamped to 2
        m.conv_offset_mask.bias[18:] = 0.0
    x, cond = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 8, 8)
    out = m(x, cond)
    off = torch.full((1, 18, 8, 8), 2.0)
    ref = torchvision.ops.deform_conv2d(x, off, m.weight, m.bias, 1, 1, 1, torch.full((1, 9, 8, 8), 0.5))
    assert torch.allclose(out, ref, atol=1e-5)
    assert m.offset_abs_mean.item() == pytest.approx(2.0)


def test_torchvision_backend_selectable():
    x, off, wt, bias, s, p, d, mask = _inputs(CASES[0], dtype=torch.float32)
    a = deform_conv2d(x, off, wt, bias, s, p, d, mask, backend="torchvision")
    b = torchvision.ops.deform_conv2d(x, off, wt, bias, s, p, d, mask)
    assert torch.equal(a, b)


def test_bad_shapes_raise():
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="offset channels"):
        deform_conv2d(x, torch.zeros(1, 17, 5, 5), torch.randn(4, 4, 3, 3), padding=1, backend="native")


def test_non_contiguous_inputs():
    x, off, wt, bias, s, p, d, mask = _inputs(CASES[0])
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, non-contiguous strides
    xs = torch.stack([x, x], 1)[:, 0]  # a slice of a 5-D tensor
    ref = torchvision.ops.deform_conv2d(x, off, wt, bias, s, p, d, mask)
    for inp in (xt, xs):
        assert not inp.is_contiguous() or inp is xs
        assert torch.allclose(deform_conv2d(inp, off, wt, bias, s, p, d, mask, backend="native"), ref, atol=1e-10)
