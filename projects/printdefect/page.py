"""Test-page I/O and preprocessing (Sec. 1.2.1): masking, descreening (12×12 Gaussian, σ=2), RGB → CIE L*a*b*.

Pages are RGBA PNGs whose alpha channel is the mask (0 = ignore), or RGB images (PNG/TIFF/…) with a separate mask
file (``<stem>_mask.png`` beside the page, or an explicit path). The dpi comes from the file (PNG pHYs / TIFF
resolution) unless the caller overrides it. All sizes of the method are given at 600 dpi and scaled with the page dpi.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import UserError
from shared.io import decode_image

PAGE_EXTS = {".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"}
MASK_SUFFIX = "_mask"
REFERENCE_DPI = 600.0


@dataclass
class Page:
    """A scanned page: uint8 H×W×3 RGB, bool H×W mask (True = analyse) and its resolution."""

    rgb: np.ndarray
    mask: np.ndarray
    dpi: float
    path: Path | None = None

    @property
    def mm_per_px(self) -> float:
        return 25.4 / self.dpi


def scaled(pixels_at_600: float, dpi: float) -> int:
    """A length given in pixels at 600 dpi, in pixels at ``dpi`` (at least 1)."""
    return max(1, int(round(pixels_at_600 * dpi / REFERENCE_DPI)))


def _file_dpi(path: Path) -> float | None:
    """Resolution stored in the file (PNG pHYs, TIFF XResolution), if any."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            dpi = im.info.get("dpi")
    except Exception:  # noqa: BLE001 - an unreadable header just means "no dpi"
        return None
    if dpi and float(dpi[0]) > 1.0:
        return float(round(float(dpi[0]), 2))
    return None


def _decode(path: Path) -> np.ndarray:
    img = decode_image(path)
    if img.dtype != np.uint8:
        raise UserError(f"unsupported pixel type {img.dtype}: {path}")
    return img


def mask_path_for(path: Path) -> Path:
    return path.with_name(f"{path.stem}{MASK_SUFFIX}.png")


def read_page(path: str | Path, mask: str | Path | None = None, dpi: float | None = None,
              require_mask: bool = True) -> Page:
    """Read a page and its mask (alpha channel, or ``mask`` / ``<stem>_mask.png``); ``dpi`` overrides the file's.
    ``mask="auto"``: :func:`auto_mask` (the page's own alpha / mask file are ignored).

    Raises :class:`UserError` for a missing/unreadable file, a missing mask (unless ``require_mask=False``: then the
    whole page is analysed), a mask of the wrong size or an unknown resolution.
    """
    path = Path(path)
    if mask is not None and str(mask) == "auto":
        page = read_page(path, dpi=dpi, require_mask=False)
        page.mask = auto_mask(page.rgb, page.dpi)
        return page
    if not path.is_file():
        raise UserError(f"page not found: {path}")
    from projects.printdefect.png import read_png

    fast = read_png(path) if path.suffix.lower() == ".png" else None
    file_dpi = None
    if fast is not None:  # 8-bit PNG: decoded in RGB order, alpha already thresholded
        rgb, alpha, file_dpi = fast.rgb, fast.mask, fast.dpi
    else:
        img = _decode(path)
        alpha = None
        if img.ndim == 2:
            rgb = np.repeat(img[..., None], 3, axis=2)
        elif img.shape[2] == 4:
            rgb, alpha = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB), img[..., 3] > 127
        else:
            rgb = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    mpath = Path(mask) if mask else mask_path_for(path)
    if mask or (alpha is None and mpath.is_file()):
        if not mpath.is_file():
            raise UserError(f"mask not found: {mpath}")
        m = _decode(mpath)
        alpha = (m if m.ndim == 2 else m[..., -1] if m.shape[2] in (2, 4) else m[..., 0]) > 127
    if alpha is None:
        if require_mask:
            raise UserError(f"page has no mask: {path} (expected an alpha channel or {mpath.name})")
        alpha = np.ones(rgb.shape[:2], bool)
    if alpha.shape != rgb.shape[:2]:
        raise UserError(f"mask size {alpha.shape[1]}x{alpha.shape[0]} does not match page "
                        f"{rgb.shape[1]}x{rgb.shape[0]}: {mpath}")
    res = dpi or file_dpi or (None if fast is not None else _file_dpi(path))
    if not res:
        raise UserError(f"page {path} stores no resolution; pass the dpi (e.g. infer_options.dpi=600)")
    return Page(np.ascontiguousarray(rgb), alpha, float(res), path)


def auto_mask(rgb: np.ndarray, dpi: float, content_delta_e: float = 6.0, max_defect_mm2: float = 6.0,
              max_defect_mm: float = 4.0, near_mm: float = 4.0, margin_mm: float = 2.0, border_mm: float = 3.0,
              close_mm: float = 4.0, box_share: float = 0.15) -> np.ndarray:
    """A mask for a page that has none (``infer_options.mask=auto``): the areas of uniform tint or paper, without
    the printed content. Not in the chapter, whose pages come with a mask (Sec. 1.2.1).

    Worked at about 150 dpi: a pixel is *ink* when its L*a*b* is more than ``content_delta_e`` (on grainy tints 3.5 ×
    the window's median deviation, at most twice ``content_delta_e``) from the median of an 8-mm window around it (the
    paper or tint level wherever ink covers less than half the window); ink joined by a 1-mm closing is *content* when
    it is larger than ``max_defect_mm2`` or longer than ``max_defect_mm`` (text lines, figures, barcodes, region edges),
    and so is any smaller mark within ``near_mm`` of content, or of a mark that is (punctuation, bullets, digits:
    typography, not defects). A content component that inks ≥ ``box_share`` of its bounding box (a drawing, a text line)
    stands for the whole box. Masked: content closed over ``close_mm`` (the gaps of a text block) and grown by
    ``margin_mm``, and a ``border_mm`` band along the page edge. Small isolated marks stay — they are what the detector
    is for; a defect closer than ``near_mm`` to content (e.g. to a tint region's edge) is not analysed.
    """
    h, w = rgb.shape[:2]
    f = max(1, int(round(dpi / 150.0)))
    sdpi = dpi / f
    small = cv2.resize(rgb, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA) if f > 1 else rgb
    lab = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2Lab)      # 8-bit Lab: L·255/100, a+128, b+128
    px = lambda mm: max(1, int(round(mm * sdpi / 25.4)))                       # noqa: E731
    k = px(8.0) | 1
    bg = cv2.medianBlur(lab, min(k, 255))
    d = lab.astype(np.float32) - bg.astype(np.float32)
    d[..., 0] *= 100.0 / 255.0
    de = np.sqrt((d**2).sum(-1))
    # on a grainy tint the threshold rises with the local texture (3.5 × the median ΔE of the window), up to
    # twice content_delta_e (a drawing's hatching is content, not grain)
    texture = cv2.medianBlur(np.clip(de * 10.0, 0, 255).astype(np.uint8), min(k, 255)).astype(np.float32) / 10.0
    ink = (de > np.clip(3.5 * texture, content_delta_e, 2 * content_delta_e)).astype(np.uint8)
    ink = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (px(1.0) | 1,) * 2))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    mm2 = (25.4 / sdpi) ** 2
    big = np.zeros(n, bool)
    big[1:] = (stats[1:, cv2.CC_STAT_AREA] * mm2 > max_defect_mm2) | \
        (np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]) * 25.4 / sdpi > max_defect_mm)
    content = big[labels].astype(np.uint8)
    for _ in range(8):              # marks near content are content, and so are marks near those (a bullet, a digit)
        if not content.any() or n <= 1:
            break
        near = cv2.distanceTransform(1 - content, cv2.DIST_L2, 5) * 25.4 / sdpi <= near_mm
        touching = np.unique(labels[near & (labels > 0)])
        if big[touching].all():
            break
        big[touching] = True
        content = big[labels].astype(np.uint8)
    # a content component that fills ≥ ``box_share`` of its bounding box (a drawing, a text line) is its whole box:
    # the light parts of a drawing are drawing too (a region's outline fills only a few per cent of its box)
    for i in np.nonzero(big)[0]:
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        if stats[i, cv2.CC_STAT_AREA] >= box_share * bw * bh:
            content[y:y + bh, x:x + bw] = 1
    # paper enclosed by content (the gaps of a text block) is content too
    content = cv2.morphologyEx(content, cv2.MORPH_CLOSE,
                               cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px(close_mm / 2) + 1,) * 2))
    grown = cv2.dilate(content, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px(margin_mm) + 1,) * 2))
    keep = grown == 0
    b = px(border_mm)
    keep[:b], keep[-b:], keep[:, :b], keep[:, -b:] = False, False, False, False
    if f > 1:
        keep = cv2.resize(keep.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return keep


def write_page(path: str | Path, rgb: np.ndarray, mask: np.ndarray, dpi: float) -> None:
    """Write an RGBA PNG whose alpha is the mask, with the dpi in its pHYs chunk (atomically)."""
    from projects.printdefect.png import encode_png
    from shared.io import atomic_write_bytes

    atomic_write_bytes(path, encode_png(np.ascontiguousarray(rgb), mask, dpi))


# ------------------------------------------------------------------------------------------- preprocessing


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps centred between the middle taps for even sizes (12×12, σ=2)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def descreen_params(dpi: float, size: int = 12, sigma: float = 2.0) -> tuple[int, float]:
    """The 600-dpi descreening kernel (size, σ) scaled to ``dpi``."""
    return scaled(size, dpi), sigma * dpi / REFERENCE_DPI


def split_even_kernel(g: np.ndarray) -> np.ndarray:
    """Factor an even-length symmetric kernel as ``s * [1, 1]`` with ``s`` odd and symmetric (exact: an even
    symmetric polynomial has a root at z = −1), so OpenCV's fast symmetric filter path applies."""
    s = np.zeros(len(g) - 1)
    acc = 0.0
    for k in range(len(g) - 1):
        acc = g[k] - acc
        s[k] = acc
    return s


def descreen_numpy(rgb: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Separable Gaussian (``size`` taps, anchor ``(size-1)//2``, reflect-101 border) on a uint8/float H×W×3 image
    → float32 in [0, 1] (OpenCV, CPU). Even sizes run as an odd symmetric filter followed by a 2×2 box sum."""
    scale = 1.0 / 255.0 if rgb.dtype == np.uint8 else 1.0
    if size <= 1:
        return rgb.astype(np.float32) * np.float32(scale)
    g = gaussian_kernel(size, sigma)
    k = (g if size % 2 else split_even_kernel(g)).astype(np.float32)
    y = cv2.sepFilter2D(rgb, cv2.CV_32F, k * np.float32(scale), k, borderType=cv2.BORDER_REFLECT_101)
    if size % 2:
        return y
    return cv2.boxFilter(y, -1, (2, 2), anchor=(0, 0), normalize=False, borderType=cv2.BORDER_REFLECT_101)


def descreen_lab_numpy(rgb: np.ndarray, size: int, sigma: float, strip: int = 512) -> np.ndarray:
    """:func:`descreen_numpy` then :func:`rgb_to_lab_numpy` for a whole page, in strips of ``strip`` rows (each read
    with a halo of ``size + 2`` rows, which covers the filter's reach) with strip-sized temporaries: the same numbers
    as the two whole-page calls, without their two page-sized float temporaries (whose fresh memory alone costs more
    time than the filtering on a 600-dpi page)."""
    h, halo = rgb.shape[0], size + 2
    if h <= strip + 2 * halo:
        return rgb_to_lab_numpy(descreen_numpy(rgb, size, sigma))
    lab = np.empty(rgb.shape, np.float32)
    for y0 in range(0, h, strip):
        y1 = min(h, y0 + strip)
        a, b = max(0, y0 - halo), min(h, y1 + halo)
        part = descreen_numpy(rgb[a:b], size, sigma)
        cv2.cvtColor(part[y0 - a:y0 - a + (y1 - y0)], cv2.COLOR_RGB2Lab, dst=lab[y0:y1])
    return lab


def descreen_torch(rgb: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """The same filter on a batch: uint8/float N×3×H×W → float32 in [0, 1] (any device)."""
    x = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    if size <= 1:
        return x
    k = torch.from_numpy(gaussian_kernel(size, sigma)).to(x)
    a = (size - 1) // 2
    c = x.shape[1]
    x = F.pad(x, (a, size - 1 - a, a, size - 1 - a), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, size), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, size, 1), groups=c)


def rgb_to_lab_numpy(rgb01: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (H×W×3 float32) → CIE L*a*b* (D65) with OpenCV's float path."""
    return cv2.cvtColor(np.ascontiguousarray(rgb01, dtype=np.float32), cv2.COLOR_RGB2Lab)


_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_D65 = (0.95047, 1.0, 1.08883)


def rgb_to_lab_torch(rgb01: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (N×3×H×W) → CIE L*a*b* (D65, the sRGB matrix of scikit-image / kornia), batched on any
    device, in plain torch."""
    x = rgb01.clamp(0, 1)
    lin = torch.where(x > 0.04045, ((x + 0.055) / 1.055).pow(2.4), x / 12.92)
    m = torch.tensor(_XYZ_FROM_RGB, dtype=x.dtype, device=x.device)
    white = torch.tensor(_D65, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    xyz = torch.einsum("ij,njhw->nihw", m, lin) / white
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12).pow(1 / 3), 7.787 * xyz + 4 / 29)
    lab_l = 116 * f[:, 1] - 16
    return torch.stack([lab_l, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def preprocess(rgb: np.ndarray | torch.Tensor, dpi: float, size: int = 12, sigma: float = 2.0,
               backend: str = "auto") -> torch.Tensor:
    """Descreen + L*a*b* of one page (H×W×3 uint8) → float32 H×W×3 tensor on the page's device.

    ``backend``: ``opencv`` (fast on CPU), ``torch`` (on the tensor's device, e.g. GPU) or ``auto`` (opencv for
    CPU tensors and arrays, torch on CUDA).
    """
    k, s = descreen_params(dpi, size, sigma)
    if isinstance(rgb, np.ndarray):
        rgb = torch.from_numpy(rgb)
    use_cv = backend == "opencv" or (backend == "auto" and rgb.device.type == "cpu")
    if use_cv:
        return torch.from_numpy(descreen_lab_numpy(rgb.cpu().numpy(), k, s)).to(rgb.device)
    x = rgb.permute(2, 0, 1)[None]
    return rgb_to_lab_torch(descreen_torch(x, k, s).clamp(0, 1))[0].permute(1, 2, 0).contiguous()
