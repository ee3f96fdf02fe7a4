"""Degradations used to make training/test inputs (Ch. 4 JPEG, Ch. 6.4.3 noise) and the x8 self-ensemble."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch import Tensor


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode/decode an RGB (or gray) uint8 H×W[×3] image as baseline JPEG (libjpeg, 4:2:0) at ``quality``."""
    if img.dtype != np.uint8:
        raise TypeError(f"jpeg() expects uint8 input, got {img.dtype}")
    q = int(round(quality))
    if not 1 <= q <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")
    color = img.ndim == 3
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if color else img
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    return cv2.cvtColor(dec, cv2.COLOR_BGR2RGB) if color else dec


def jpeg_tensor(x: Tensor, quality: int | list[int]) -> Tensor:
    """:func:`jpeg` on an N×3×H×W tensor in [0, 1] (quantised to uint8 first); one quality or one per image."""
    qs = quality if isinstance(quality, list) else [quality] * x.shape[0]
    arr = (x.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([jpeg(a, q) for a, q in zip(arr, qs, strict=True)])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Add N(0, σ²) noise to a [0, 1] tensor (σ on the [0, 1] scale); not clipped."""
    return x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def salt_and_pepper(
    x: Tensor, amount: float, salt_ratio: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """Set a fraction ``amount`` of pixels (all channels together) to 1 (salt) or 0 (pepper)."""
    shape = (x.shape[0], 1, *x.shape[2:]) if x.ndim == 4 else (1, *x.shape[1:])
    u = torch.rand(shape, generator=generator, device=x.device)
    hit = u < amount
    salt = u < amount * salt_ratio
    out = torch.where(hit, torch.zeros_like(x), x)
    return torch.where(salt, torch.ones_like(x), out)


def _dihedral(x: Tensor, i: int) -> Tensor:
    """i in 0..7: bit0 flips W, bit1 flips H, bit2 transposes H/W."""
    if i & 1:
        x = x.flip(-1)
    if i & 2:
        x = x.flip(-2)
    if i & 4:
        x = x.transpose(-2, -1)
    return x


def _dihedral_inverse(x: Tensor, i: int) -> Tensor:
    if i & 4:
        x = x.transpose(-2, -1)
    if i & 2:
        x = x.flip(-2)
    if i & 1:
        x = x.flip(-1)
    return x


def self_ensemble(fn: Callable[[Tensor], Tensor], x: Tensor, batched: bool = True) -> Tensor:
    """x8 geometric self-ensemble: average of ``T⁻¹(fn(T(x)))`` over the 8 flips/transposes of the last two dims.

    ``batched`` runs the square inputs' 8 variants as one batch (non-square inputs are run in two groups, since
    transposing changes H×W). Works for any leading shape (e.g. B×N×C×H×W video clips).
    """
    variants = [_dihedral(x, i) for i in range(8)]
    if batched:
        outs: list[Tensor] = [None] * 8  # type: ignore[list-item]
        for group in ([0, 1, 2, 3], [4, 5, 6, 7]) if x.shape[-1] != x.shape[-2] else ([*range(8)],):
            y = fn(torch.cat([variants[i] for i in group], dim=0))
            for j, i in enumerate(y.chunk(len(group), dim=0)):
                outs[group[j]] = i
    else:
        outs = [fn(v) for v in variants]
    return torch.stack([_dihedral_inverse(o, i) for i, o in enumerate(outs)]).mean(dim=0)
