"""PSNR / SSIM with the super-resolution field's reference conventions, torchmetrics wrappers, and LPIPS.

Conventions (BasicSR ``calculate_psnr``/``calculate_ssim``, Wang's ``ssim_index.m``): crop ``crop_border`` px from
every edge → optionally convert to MATLAB BT.601 Y (studio swing, *not* rounded) → float64 → metric on the
[0, 255] scale. SSIM: 11x11 Gaussian window, σ = 1.5, 'valid' filtering, C1 = (0.01·255)², C2 = (0.03·255)²,
mean over the map and then over channels.

Inputs: numpy H×W×C (or H×W) RGB arrays on the [0, 255] scale (uint8 or float), or torch N×C×H×W tensors in
[0, 1] (quantised to uint8 first, like the images a paper's numbers were computed on; ``quantize=False`` keeps
them as they are). numpy inputs give a float; tensors give a float64 tensor of per-image values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from shared.errors import UserError

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(x: Tensor) -> Tensor:
    """MATLAB ``rgb2ycbcr`` Y channel of N×3×H×W RGB on the [0, 255] scale → N×1×H×W in [16, 235], unrounded."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 16.0 + (_Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b) / 255.0


def _to_nchw255(img, quantize: bool) -> tuple[Tensor, bool]:
    """Return a float64 N×C×H×W tensor on the [0,255] scale, and whether the input was numpy."""
    if isinstance(img, np.ndarray):
        arr = img.astype(np.float64)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3:
            raise ValueError(f"numpy images must be H×W or H×W×C, got shape {img.shape}")
        return torch.from_numpy(arr).permute(2, 0, 1)[None], True
    if isinstance(img, Tensor):
        t = img.detach()
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4:
            raise ValueError(f"tensors must be N×C×H×W (or C×H×W), got shape {tuple(img.shape)}")
        t = t.to(torch.float64)
        t = (t.clamp(0, 1) * 255.0).round() if quantize else t * 255.0
        return t, False
    raise TypeError(f"expected a numpy array or torch tensor, got {type(img).__name__}")


def _prepare(a, b, crop_border: int, y_channel: bool, quantize: bool) -> tuple[Tensor, Tensor, bool]:
    ta, is_np = _to_nchw255(a, quantize)
    tb, _ = _to_nchw255(b, quantize)
    if ta.shape != tb.shape:
        raise ValueError(f"image shapes differ: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    if crop_border:
        ta = ta[..., crop_border:-crop_border, crop_border:-crop_border]
        tb = tb[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        if ta.shape[1] != 3:
            raise ValueError(f"y_channel needs 3-channel RGB input, got {ta.shape[1]} channels")
        ta, tb = rgb_to_y(ta), rgb_to_y(tb)
    return ta, tb, is_np


def psnr(a, b, crop_border: int = 0, y_channel: bool = False, quantize: bool = True):
    """Peak signal-to-noise ratio in dB (peak 255); identical images give ``inf``."""
    ta, tb, is_np = _prepare(a, b, crop_border, y_channel, quantize)
    mse = ((ta - tb) ** 2).mean(dim=(1, 2, 3))
    out = 10.0 * torch.log10(255.0**2 / mse)
    return float(out[0]) if is_np else out


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def _ssim_per_image(x: Tensor, y: Tensor) -> Tensor:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    n, c, h, w = x.shape
    if h < 11 or w < 11:
        raise ValueError(f"SSIM needs images of at least 11×11 after cropping, got {h}×{w}")
    win = _gaussian_window().to(x.device).expand(c, 1, 11, 11)

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(t, win, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return ssim_map.mean(dim=(2, 3)).mean(dim=1)


def ssim(a, b, crop_border: int = 0, y_channel: bool = False, quantize: bool = True):
    """Structural similarity (Wang et al. 2004 reference settings); channels averaged."""
    ta, tb, is_np = _prepare(a, b, crop_border, y_channel, quantize)
    out = _ssim_per_image(ta, tb)
    return float(out[0]) if is_np else out


class _MeanImageMetric(torchmetrics.Metric):
    """Average of a per-image metric over every image seen (images from all DDP ranks)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, crop_border: int = 0, y_channel: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.crop_border, self.y_channel = crop_border, y_channel
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def _per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        vals = self._per_image(preds, target)
        self.total += vals.sum().to(self.total.device)
        self.count += vals.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count.clamp(min=1)).float()


class PSNR(_MeanImageMetric):
    """Mean per-image PSNR (see :func:`psnr`), for use inside Lightning modules."""

    def _per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        return psnr(preds, target, self.crop_border, self.y_channel)


class SSIM(_MeanImageMetric):
    """Mean per-image SSIM (see :func:`ssim`), for use inside Lightning modules."""

    def _per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        return ssim(preds, target, self.crop_border, self.y_channel)


def load_lpips(net: str = "alex", backbone_path: str | Path | None = None, version: str = "0.1"):
    """LPIPS with its linear heads from the ``lpips`` wheel and the ImageNet backbone from ``backbone_path``.

    The backbone (torchvision ``alexnet``/``vgg16``/``squeezenet1_1`` state_dict, full model or ``features`` only)
    cannot be downloaded here, so it is read from a path the user configures; a missing path is a
    :class:`UserError`. The returned module expects N×3×H×W inputs in [-1, 1] (``normalize=True`` for [0, 1]).
    """
    import lpips

    from shared.checkpoint import load_backbone_features

    feats = load_backbone_features(backbone_path, f"LPIPS {net} backbone",
                                   "set metrics.lpips_backbone to a torchvision state_dict")
    model = lpips.LPIPS(pretrained=True, net=net, version=version, pnet_rand=True, verbose=False)
    target = {}
    for name in model.net.state_dict():
        _slice, idx, pname = name.split(".")
        key = f"{idx}.{pname}"
        if key not in feats:
            raise UserError(f"LPIPS backbone {backbone_path} lacks 'features.{key}' (is it a torchvision {net}?)")
        target[name] = feats[key]
    model.net.load_state_dict(target)
    return model.eval().requires_grad_(False)
