import numpy as np
import pytest
import torch

from shared.degradations import gaussian_noise, jpeg, jpeg_tensor, salt_and_pepper, self_ensemble
from shared.metrics import psnr


def test_jpeg_keeps_colour_order_and_degrades_with_quality():
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 220
    out = jpeg(red, 50)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 20  # an RGB/BGR swap would turn it blue
    from skimage import data

    img = data.astronaut()[:128, :128].copy()
    p10, p90 = psnr(img, jpeg(img, 10)), psnr(img, jpeg(img, 90))
    assert p10 < p90 < 60
    assert np.array_equal(jpeg(img, 30), jpeg(img, 30))
    with pytest.raises(ValueError):
        jpeg(img, 0)
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    assert np.array_equal((jpeg_tensor(t, 30)[0].permute(1, 2, 0) * 255).round().byte().numpy(), jpeg(img, 30))


def test_noise_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.full((1, 3, 200, 200), 0.5)
    n = gaussian_noise(x, 0.1, g) - x
    assert n.std().item() == pytest.approx(0.1, rel=0.02)
    sp = salt_and_pepper(x, 0.2, 0.5, g)
    hit = (sp[:, 0] != 0.5).float().mean().item()
    assert hit == pytest.approx(0.2, abs=0.01)
    assert ((sp == 1).float().mean() / (sp == 0).float().mean()).item() == pytest.approx(1.0, rel=0.1)
    assert torch.equal(sp[:, 0] == 1, sp[:, 1] == 1)  # all channels of a pixel together


def test_self_ensemble_equivariant_and_naive():
    x = torch.randn(2, 3, 6, 8)
    assert torch.allclose(self_ensemble(lambda t: t * 2 + 1, x), x * 2 + 1)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def naive(x):
        outs = []
        for flip_w in (False, True):
            for flip_h in (False, True):
                for tr in (False, True):
                    t = x
                    t = t.flip(-1) if flip_w else t
                    t = t.flip(-2) if flip_h else t
                    t = t.transpose(-2, -1) if tr else t
                    y = conv(t)
                    y = y.transpose(-2, -1) if tr else y
                    y = y.flip(-2) if flip_h else y
                    y = y.flip(-1) if flip_w else y
                    outs.append(y)
        return torch.stack(outs).mean(0)

    with torch.no_grad():
        ref = naive(x)
        assert torch.allclose(self_ensemble(conv, x), ref, atol=1e-6)
        assert torch.allclose(self_ensemble(conv, x, batched=False), ref, atol=1e-6)
        sq = torch.randn(1, 3, 7, 7)
        assert torch.allclose(self_ensemble(conv, sq), naive(sq), atol=1e-6)
