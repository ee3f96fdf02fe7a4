"""Local correlation maps (Eq. 5.7) for the correlation loss (Eq. 5.8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def correlation(x: Tensor, k: int = 3, dilation: int = 1, center: bool = True) -> Tensor:
    """Local correlation map of ``x`` (B×C×H×W) → B×k²×H×W (Eq. 5.7).

    Each channel is first mean-centred over H×W (per image) when ``center``. Output channel ``(i+r)·k + (j+r)``
    (r = (k-1)/2, i, j ∈ [-r, r]) holds ``1/k² · <x(y, x), x(y - i·d, x - j·d)>`` over channels, with zeros
    outside the image. Dilation ``d`` widens the window to (kd-d+1)².
    """
    if k < 1 or k % 2 == 0:
        raise ValueError(f"correlation window k must be odd and positive, got {k}")
    if center:
        x = x - x.mean(dim=(-2, -1), keepdim=True)
    r = (k - 1) // 2
    p = r * dilation
    h, w = x.shape[-2:]
    xp = F.pad(x, (p, p, p, p))
    maps = []
    for i in range(-r, r + 1):
        for j in range(-r, r + 1):
            # neighbour at (y - i·d, x - j·d)
            ys, xs = p - i * dilation, p - j * dilation
            maps.append((x * xp[..., ys : ys + h, xs : xs + w]).sum(dim=1))
    return torch.stack(maps, dim=1) / (k * k)
