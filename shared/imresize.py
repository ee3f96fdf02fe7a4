"""MATLAB-compatible bicubic ``imresize`` — how every SR benchmark makes its LR images (Ch. 4, 5, 6).

Keys cubic (a = -0.5), pixel-centre alignment u = x/s + 0.5·(1 - 1/s), antialiasing when downscaling (kernel
stretched by 1/s), symmetric edge mirroring, H resized before W, output size ceil(in·s). Each axis becomes a dense
float64 resampling matrix, so a resize is two matmuls and exact to double precision.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


@lru_cache(maxsize=64)
def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The out_len × in_len matrix of MATLAB's ``contributions`` (bicubic), mirrored edges folded in."""
    width = 4.0
    stretch = antialias and scale < 1
    if stretch:
        width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if stretch else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_len + 1), np.arange(in_len, 0, -1)])
    src = aux[np.mod(idx.astype(np.int64) - 1, len(aux))] - 1  # 0-based, symmetric mirror
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), src.ravel()), w.ravel())
    return mat


def _out_size(h: int, w: int, scale: float | tuple[int, int]) -> tuple[int, int, float, float]:
    if isinstance(scale, tuple | list):
        oh, ow = int(scale[0]), int(scale[1])
        return oh, ow, oh / h, ow / w
    return int(math.ceil(h * scale)), int(math.ceil(w * scale)), float(scale), float(scale)


def imresize(img, scale: float | tuple[int, int], antialias: bool = True):
    """Resize like MATLAB ``imresize(img, scale, 'bicubic')``.

    ``img``: numpy H×W×C / H×W (uint8 → rounded, clipped uint8 like MATLAB; float → float, unclipped) or a torch
    C×H×W / N×C×H×W tensor (float, result unclipped, dtype kept). ``scale``: a factor or an (out_h, out_w) size.
    """
    if isinstance(img, np.ndarray):
        was_uint8 = img.dtype == np.uint8
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64))
        t = t[..., None] if t.ndim == 2 else t
        out = _resize_last2(t.permute(2, 0, 1), scale, antialias).permute(1, 2, 0).numpy()
        out = out[..., 0] if img.ndim == 2 else out
        if was_uint8:
            return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)  # MATLAB rounds half away from zero
        return out.astype(img.dtype, copy=False)
    if isinstance(img, Tensor):
        return _resize_last2(img.to(torch.float64), scale, antialias).to(img.dtype)
    raise TypeError(f"imresize expects a numpy array or a torch tensor, got {type(img).__name__}")


def _resize_last2(t: Tensor, scale, antialias: bool) -> Tensor:
    h, w = t.shape[-2:]
    oh, ow, sh, sw = _out_size(h, w, scale)
    mh = torch.from_numpy(resize_matrix(h, oh, sh, antialias)).to(t.device)
    mw = torch.from_numpy(resize_matrix(w, ow, sw, antialias)).to(t.device)
    return mh @ t @ mw.T


def modcrop(img, mod: int, name: str | None = None):
    """Drop the bottom/right remainder so H and W are multiples of ``mod`` (numpy H×W[×C] or tensor …×H×W); an
    image smaller than ``mod`` (nothing would be left) is a :class:`UserError` naming ``name``."""
    h, w = img.shape[:2] if isinstance(img, np.ndarray) else img.shape[-2:]
    if h < mod or w < mod:
        from shared.errors import UserError

        raise UserError(f"image {name or ''} is {w}×{h} pixels, smaller than the scale factor {mod}")
    if isinstance(img, np.ndarray):
        return img[: h - h % mod, : w - w % mod]
    return img[..., : h - h % mod, : w - w % mod]
