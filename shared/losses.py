"""Pixel and structure losses shared by the SR projects."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from shared.ops.correlation import correlation

Reduction = Literal["mean", "sum", "none"]


def _reduce(x: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"unknown reduction {reduction!r} (mean | sum | none)")


class CharbonnierLoss(nn.Module):
    """sqrt((x - y)² + ε²) (Eq. 5.10, 6.7; ε = 1e-3 in the dissertation, i.e. 1e-6 inside the root)."""

    def __init__(self, eps: float = 1e-3, reduction: Reduction = "mean") -> None:
        super().__init__()
        _reduce(torch.zeros(1), reduction)  # validate early
        self.eps, self.reduction = eps, reduction

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return _reduce(torch.sqrt((pred - target) ** 2 + self.eps**2), self.reduction)


class CorrelationLoss(nn.Module):
    """L1 distance between local correlation maps of output and target (Eq. 5.7-5.8), window k, dilation d."""

    def __init__(self, k: int = 3, dilation: int = 1, reduction: Reduction = "mean") -> None:
        super().__init__()
        _reduce(torch.zeros(1), reduction)
        self.k, self.dilation, self.reduction = k, dilation, reduction

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        diff = correlation(pred, self.k, self.dilation) - correlation(target, self.k, self.dilation)
        return _reduce(diff.abs(), self.reduction)


def make_pixel_loss(kind: str, reduction: Reduction = "mean", eps: float = 1e-3) -> nn.Module:
    """``l1`` | ``mse`` | ``charbonnier`` — the selectable pixel loss of Ch. 4 / 5 / 6 training."""
    if kind == "l1":
        return nn.L1Loss(reduction=reduction)
    if kind == "mse":
        return nn.MSELoss(reduction=reduction)
    if kind == "charbonnier":
        return CharbonnierLoss(eps, reduction)
    raise ValueError(f"unknown pixel loss {kind!r} (l1 | mse | charbonnier)")


# VGG-19 `features` indices of the convolutions, by the usual names (the loss taps the output *before* the ReLU)
VGG19_CONV = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
              "conv3_4": 16, "conv4_1": 19, "conv4_2": 21, "conv4_3": 23, "conv4_4": 25, "conv5_1": 28,
              "conv5_2": 30, "conv5_3": 32, "conv5_4": 34}


class VGGPerceptualLoss(nn.Module):
    """L1 between VGG-19 features taken before the ReLU of ``layer`` (Eq. 5.10; ESRGAN uses conv5_4).

    The ImageNet weights cannot be downloaded here: ``weights_path`` is a torchvision ``vgg19`` state dict (the
    whole model or ``features`` only; only the layers up to ``layer`` are needed). Inputs are RGB in [0, 1],
    normalised with the ImageNet mean/std. The network is frozen.
    """

    def __init__(self, weights_path: str | None, layer: str = "conv5_4", reduction: Reduction = "mean") -> None:
        super().__init__()
        import torchvision

        from shared.checkpoint import load_backbone_features
        from shared.errors import UserError

        if layer not in VGG19_CONV:
            raise ValueError(f"unknown VGG-19 layer {layer!r} (one of {', '.join(VGG19_CONV)})")
        sub = load_backbone_features(weights_path, "VGG-19",
                                     "set the perceptual loss weights_path to a torchvision vgg19 state_dict")
        depth = VGG19_CONV[layer] + 1
        self.features = torchvision.models.vgg19(weights=None).features[:depth]
        want = self.features.state_dict()
        missing = [k for k in want if k not in sub]
        if missing:
            raise UserError(f"VGG-19 weights {weights_path} lack 'features.{missing[0]}' (needed up to {layer})")
        self.features.load_state_dict({k: sub[k] for k in want})
        self.features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.reduction = reduction

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # frozen feature extractor stays in eval mode
        return self

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        f = lambda x: self.features((x - self.mean) / self.std)  # noqa: E731
        return _reduce((f(pred) - f(target).detach()).abs(), self.reduction)


def ragan_losses(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Relativistic average GAN (Eq. 5.11-5.13) from raw discriminator outputs C(·).

    D_Ra(a, b) = σ(C(a) − E[C(b)]). Returns (L_D, L_adv): L_D = −E_HR[log D_Ra(HR, SR)] − E_SR[log(1 − D_Ra(SR, HR))]
    and the generator's L_adv = −E_HR[log(1 − D_Ra(HR, SR))] − E_SR[log D_Ra(SR, HR)]. Computed with logits
    (log σ(z) = −softplus(−z), log(1 − σ(z)) = −softplus(z)) for numerical stability.
    """
    import torch.nn.functional as F

    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    loss_d = F.softplus(-real_rel).mean() + F.softplus(fake_rel).mean()
    loss_g = F.softplus(real_rel).mean() + F.softplus(-fake_rel).mean()
    return loss_d, loss_g
