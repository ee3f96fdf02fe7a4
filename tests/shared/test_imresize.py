import math

import numpy as np
import pytest
import torch
from PIL import Image

from shared.imresize import imresize, modcrop


def naive_matlab_imresize_1d(v: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB's contributions(): one output pixel at a time, written from the MATLAB algorithm description."""
    n = len(v)
    out_n = math.ceil(n * scale)

    def cubic(x):
        x = abs(x)
        if x <= 1:
            return 1.5 * x**3 - 2.5 * x**2 + 1
        if x <= 2:
            return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
        return 0.0

    width = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros(out_n)
    for i in range(1, out_n + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        ws, idxs = [], []
        for t in range(math.ceil(width) + 2):
            j = left + t
            wgt = scale * cubic(scale * (u - j)) if scale < 1 else cubic(u - j)
            # symmetric padding: index 0 → 1, -1 → 2, n+1 → n …
            while j < 1 or j > n:
                j = 1 - j if j < 1 else 2 * n + 1 - j
            ws.append(wgt)
            idxs.append(j - 1)
        ws = np.array(ws) / sum(ws)
        out[i - 1] = sum(w * v[k] for w, k in zip(ws, idxs))
    return out


@pytest.mark.parametrize("scale", [0.25, 0.5, 1 / 3, 2, 3, 4])
def test_matches_naive_matlab_algorithm(scale):
    rng = np.random.default_rng(1)
    img = rng.random((13, 17)) * 255
    ours = imresize(img, scale)
    ref = np.stack([naive_matlab_imresize_1d(row, scale) for row in img])  # W first on rows …
    ref = np.stack([naive_matlab_imresize_1d(col, scale) for col in ref.T]).T  # … then H (separable, same result)
    assert ours.shape == (math.ceil(13 * scale), math.ceil(17 * scale))
    assert np.abs(ours - ref).max() < 1e-9


@pytest.mark.parametrize("scale", [0.25, 0.5, 2, 4])
def test_interior_matches_pillow_bicubic(scale):
    """Pillow uses the same Keys kernel (a=-0.5), centre alignment and antialiasing; only edges differ."""
    rng = np.random.default_rng(0)
    img = rng.random((64, 72)) * 255
    ours = imresize(img, scale)
    pil = Image.fromarray(img.astype(np.float32), mode="F").resize((ours.shape[1], ours.shape[0]), Image.BICUBIC)
    m = 3 if scale < 1 else 10
    assert np.abs(ours[m:-m, m:-m] - np.asarray(pil)[m:-m, m:-m]).max() < 1e-3


def test_uint8_rounding_constant_and_tensor_paths():
    const = np.full((20, 24, 3), 77, np.uint8)
    out = imresize(const, 0.25)
    assert out.dtype == np.uint8 and out.shape == (5, 6, 3) and np.all(out == 77)
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (16, 20, 3)).astype(np.uint8)
    f = imresize(img.astype(np.float64), 0.5)
    assert np.array_equal(imresize(img, 0.5), np.clip(np.floor(f + 0.5), 0, 255).astype(np.uint8))
    t = torch.from_numpy(img).permute(2, 0, 1)[None].double()
    assert torch.allclose(imresize(t, 0.5)[0].permute(1, 2, 0), torch.from_numpy(f))
    assert imresize(t.float(), (7, 9)).shape == (1, 3, 7, 9)


def test_modcrop():
    assert modcrop(np.zeros((13, 18, 3)), 4).shape == (12, 16, 3)
    assert modcrop(torch.zeros(1, 3, 13, 18), 4).shape == (1, 3, 12, 16)
