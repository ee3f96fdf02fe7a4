"""68-point landmark I/O and geometry (Ch. 3): iBUG ``.pts`` files, the horizontal-flip index permutation, face
crops from the landmark box (with jitter) and the annotation-noise injection of the Fig. 3.9 study.

Coordinates in memory are 0-based pixel coordinates with pixel centres on integers (the convention of
``cv2.warpAffine``); ``.pts`` files store MATLAB 1-based coordinates, so 1 is subtracted on read and added on write.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from shared.errors import UserError
from shared.io import atomic_write_text

N_POINTS = 68
# 0-based index ranges of the 68-point (Multi-PIE) markup.
COMPONENTS: dict[str, list[int]] = {
    "contour": list(range(0, 17)),
    "brows": list(range(17, 27)),
    "nose": list(range(27, 36)),
    "eyes": list(range(36, 48)),
    "mouth": list(range(48, 68)),
}
LEFT_EYE = list(range(36, 42))  # image-left eye (the subject's right)
RIGHT_EYE = list(range(42, 48))
OUTER_CORNERS = (36, 45)

# Mirror pairs, 0-based (jaw, brows, nose, eyes, outer mouth, inner mouth); unpaired points map to themselves.
_PAIRS = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
          + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
          + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)] + [(60, 64), (61, 63), (65, 67)])


def _flip_permutation() -> np.ndarray:
    perm = np.arange(N_POINTS)
    for a, b in _PAIRS:
        perm[a], perm[b] = b, a
    return perm


FLIP_PERM = _flip_permutation()


# ------------------------------------------------------------------------------------------------ .pts I/O


def parse_pts(text: str, source: str = "<pts>") -> np.ndarray:
    """Parse iBUG ``.pts`` text → float32 (n, 2) array, 0-based (1 subtracted)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    try:
        start, end = lines.index("{"), lines.index("}")
        header = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[:start] if ":" in ln)}
        pts = np.array([[float(v) for v in ln.split()[:2]] for ln in lines[start + 1:end]], dtype=np.float64)
    except ValueError as exc:
        raise UserError(f"not a .pts landmark file: {source}") from exc
    n = int(header.get("n_points", len(pts)))
    if pts.ndim != 2 or pts.shape != (n, 2):
        raise UserError(f"{source}: header says {n} points, found {len(pts)}")
    return (pts - 1.0).astype(np.float32)


def read_pts(path: str | Path) -> np.ndarray:
    """Read an iBUG ``.pts`` file (1-based on disk) → (n, 2) float32, 0-based."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"landmark file not found: {path}")
    return parse_pts(path.read_text(errors="replace"), str(path))


def format_pts(points: np.ndarray) -> str:
    """0-based (n, 2) points → iBUG ``.pts`` text (1-based)."""
    pts = np.asarray(points, dtype=np.float64) + 1.0
    body = "\n".join(f"{x:.6f} {y:.6f}" for x, y in pts)
    return f"version: 1\nn_points:  {len(pts)}\n{{\n{body}\n}}\n"


def write_pts(path: str | Path, points: np.ndarray) -> None:
    """Write 0-based points as a 1-based ``.pts`` file (atomically)."""
    atomic_write_text(path, format_pts(points))


# ------------------------------------------------------------------------------------------------ geometry


def check_shape(points: np.ndarray, what: str = "landmarks") -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape[-2:] != (N_POINTS, 2):
        raise UserError(f"{what} must have shape (..., 68, 2), got {pts.shape}")
    return pts


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance ‖p36 − p45‖ (normaliser of Eq. 3.1); works on (..., 68, 2)."""
    pts = np.asarray(points, dtype=np.float64)
    return np.linalg.norm(pts[..., OUTER_CORNERS[0], :] - pts[..., OUTER_CORNERS[1], :], axis=-1)


def inter_pupil(points: np.ndarray) -> np.ndarray:
    """Distance between the eye centres mean(36..41) and mean(42..47)."""
    pts = np.asarray(points, dtype=np.float64)
    return np.linalg.norm(pts[..., LEFT_EYE, :].mean(-2) - pts[..., RIGHT_EYE, :].mean(-2), axis=-1)


def flip_points(points: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally mirrored image (``img[:, ::-1]``): x → width − 1 − x, indices permuted."""
    pts = np.asarray(points).copy()
    pts[..., 0] = width - 1 - pts[..., 0]
    return pts[..., FLIP_PERM, :]


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 (or 3×3) affine matrix to (..., 2) points."""
    m = np.asarray(m, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64)
    return pts @ m[:2, :2].T + m[:2, 2]


def apply_homography(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3×3 homography to (..., 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    q = pts @ np.asarray(h, dtype=np.float64)[:, :2].T + np.asarray(h, dtype=np.float64)[:, 2]
    return q[..., :2] / q[..., 2:3]


def landmark_box(points: np.ndarray) -> np.ndarray:
    """Tight box [x0, y0, x1, y1] of the points."""
    pts = np.asarray(points, dtype=np.float64)
    return np.concatenate([pts.min(-2), pts.max(-2)], -1)


def crop_transform(box: np.ndarray, size: int, margin: float = 0.25, shift: tuple[float, float] = (0.0, 0.0),
                   scale: float = 1.0) -> np.ndarray:
    """2×3 affine image → crop: a square of side max(w, h)·(1 + 2·margin)·scale around the box centre moved by
    ``shift`` (fractions of that side), mapped onto ``size``×``size`` pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 1.0) * (1 + 2 * margin) * scale
    cx, cy = (x0 + x1) / 2 + shift[0] * side, (y0 + y1) / 2 + shift[1] * side
    s = size / side
    # pixel centres: crop pixel (size-1)/2 sits on the square's centre
    return np.array([[s, 0.0, (size - 1) / 2 - s * cx], [0.0, s, (size - 1) / 2 - s * cy]])


def jittered_transform(box: np.ndarray, size: int, rng: np.random.Generator, margin: float = 0.25,
                       shift: float = 0.0, scale: float = 0.0) -> np.ndarray:
    """:func:`crop_transform` with a uniform random centre shift (± ``shift`` of the side) and scale (1 ± ``scale``)."""
    d = rng.uniform(-shift, shift, size=2) if shift > 0 else (0.0, 0.0)
    k = float(rng.uniform(1 - scale, 1 + scale)) if scale > 0 else 1.0
    return crop_transform(box, size, margin, (float(d[0]), float(d[1])), k)


def warp_crop(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The ``size``×``size`` crop of ``image`` under the 2×3 affine ``m`` (bilinear, zero outside)."""
    return cv2.warpAffine(image, np.asarray(m, dtype=np.float64), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine matrix."""
    full = np.vstack([np.asarray(m, dtype=np.float64)[:2], [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


# ------------------------------------------------------------------------------------------------ noise


NOISE_TYPES = ("gaussian", "poisson", "bernoulli", "salt_pepper", "impulse")


def add_annotation_noise(points: np.ndarray, rng: np.random.Generator, sigma: float = 0.0, kind: str = "gaussian",
                         prob: float = 0.0, spread: float = 0.2, lam: float = 4.0) -> np.ndarray:
    """Corrupt annotations with one noise type of Table 3.1 (the Fig. 3.9 / Table 3.1 studies); d = the outer-ocular
    distance of each face, values are per coordinate (x and y independently):

    * ``gaussian`` — additive N(0, (σ·d)²) (σ = 0–3 % in Fig. 3.9);
    * ``poisson`` — additive σ·d·(K − λ)/√λ with K ~ Poisson(λ): zero mean, standard deviation σ·d, skewed for
      small λ;
    * ``bernoulli`` — multiplicative Bernoulli (binomial) noise: each coordinate is dropped with probability
      ``prob`` — returned as NaN; the data set zeroes it in the crop frame and keeps the mask, which the
      "Modified L2" loss uses (Table 3.1, [70]: the masked L2 of Deep Image Prior's inpainting);
    * ``salt_pepper`` — each coordinate, with probability ``prob``, is set to the low or the high end (50/50) of
      the face's range = its landmark box grown by ``spread``·d on each side;
    * ``impulse`` — random-valued impulse noise: each coordinate, with probability ``prob``, is replaced by a value
      drawn uniformly from that range.
    """
    if kind not in NOISE_TYPES:
        raise UserError(f"unknown annotation noise {kind!r} ({' | '.join(NOISE_TYPES)})")
    pts = check_shape(points).copy()
    d = inter_ocular(pts)[..., None, None]
    if kind == "gaussian" and sigma > 0:
        pts = pts + rng.normal(0.0, 1.0, size=pts.shape) * sigma * d
    elif kind == "poisson" and sigma > 0:
        if lam <= 0:
            raise UserError(f"Poisson annotation noise needs λ > 0, got {lam}")
        pts = pts + (rng.poisson(lam, size=pts.shape) - lam) / np.sqrt(lam) * sigma * d
    elif kind != "poisson" and kind != "gaussian" and prob > 0:
        hit = rng.random(pts.shape) < prob
        if kind == "bernoulli":
            pts = np.where(hit, np.nan, pts)
        else:
            lo = pts.min(-2, keepdims=True) - spread * d
            hi = pts.max(-2, keepdims=True) + spread * d
            if kind == "salt_pepper":
                value = np.where(rng.random(pts.shape) < 0.5, lo, hi)
            else:
                value = lo + rng.random(pts.shape) * (hi - lo)
            pts = np.where(hit, value, pts)
    return pts.astype(np.float32)
