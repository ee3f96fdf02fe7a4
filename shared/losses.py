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
