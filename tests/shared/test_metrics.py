import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from shared.errors import UserError
from shared.metrics import PSNR, SSIM, load_lpips, psnr, ssim


@pytest.fixture(scope="module")
def pair():
    from skimage import data

    hr = data.astronaut()[:96, :120].copy()
    rng = np.random.default_rng(0)
    noisy = np.clip(hr.astype(np.int16) + rng.integers(-12, 13, hr.shape), 0, 255).astype(np.uint8)
    return hr, noisy


def y_numpy(img):
    """MATLAB rgb2ycbcr Y on the [0,255] scale (independent float64 numpy)."""
    f = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]


def test_psnr_known_value():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[...] = 1  # MSE = 1
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2), abs=1e-12)
    assert psnr(a, a) == math.inf


def test_psnr_matches_skimage_rgb_and_y(pair):
    hr, sr = pair
    assert psnr(hr, sr) == pytest.approx(peak_signal_noise_ratio(hr, sr, data_range=255), abs=1e-3)
    ref_y = peak_signal_noise_ratio(y_numpy(hr)[4:-4, 4:-4], y_numpy(sr)[4:-4, 4:-4], data_range=255)
    assert psnr(hr, sr, crop_border=4, y_channel=True) == pytest.approx(ref_y, abs=1e-3)


def test_ssim_matches_reference_settings(pair):
    hr, sr = pair
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    ref_rgb = structural_similarity(hr, sr, channel_axis=2, **kw)
    assert ssim(hr, sr) == pytest.approx(ref_rgb, abs=1e-4)
    ref_y = structural_similarity(y_numpy(hr)[4:-4, 4:-4], y_numpy(sr)[4:-4, 4:-4], **kw)
    assert ssim(hr, sr, crop_border=4, y_channel=True) == pytest.approx(ref_y, abs=1e-4)
    assert ssim(hr, hr) == pytest.approx(1.0)


def test_torch_path_equals_numpy_path(pair):
    hr, sr = pair
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255.0  # noqa: E731
    both = torch.cat([t(hr), t(hr)]), torch.cat([t(sr), t(hr)])
    p = psnr(*both, crop_border=4, y_channel=True)
    assert p[0].item() == pytest.approx(psnr(hr, sr, 4, True), abs=1e-6) and math.isinf(p[1].item())
    s = ssim(*both, crop_border=4, y_channel=True)
    assert s[0].item() == pytest.approx(ssim(hr, sr, 4, True), abs=1e-8)


def test_shape_mismatch_raises(pair):
    hr, sr = pair
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(hr, sr[:-1])


def test_torchmetrics_wrappers_average_per_image(pair):
    hr, sr = pair
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255.0  # noqa: E731
    m, s = PSNR(crop_border=2, y_channel=True), SSIM(crop_border=2, y_channel=True)
    sr2 = np.clip(hr.astype(int) + 30, 0, 255).astype(np.uint8)
    for a in (sr, sr2):
        m.update(t(a), t(hr))
        s.update(t(a), t(hr))
    expect = (psnr(sr, hr, 2, True) + psnr(sr2, hr, 2, True)) / 2
    assert m.compute().item() == pytest.approx(expect, abs=1e-4)
    assert s.compute().item() == pytest.approx((ssim(sr, hr, 2, True) + ssim(sr2, hr, 2, True)) / 2, abs=1e-6)


def test_lpips_backbone_from_path(tmp_path):
    import torchvision

    with pytest.raises(UserError, match="backbone"):
        load_lpips("alex", tmp_path / "missing.pth")
    tv = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(tv.state_dict(), path)
    model = load_lpips("alex", path)
    # every backbone conv now holds the user's weights
    assert torch.equal(getattr(model.net.slice1, "0").weight, tv.features[0].weight)
    assert torch.equal(getattr(model.net.slice5, "10").weight, tv.features[10].weight)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert model(x, x).item() == pytest.approx(0.0, abs=1e-7)
    assert model(x, y).item() > 0
    torch.save({"classifier.1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="lacks"):
        load_lpips("alex", tmp_path / "bad.pth")
