"""Synthetic 68-point faces laid out like 300-W and 300-VW, for tests and demos (the real datasets are not
available offline). A procedural mean shape with the exact 68-point semantics (mirror-symmetric under the flip
permutation) is varied (mouth/eye opening, brow height), placed by a random similarity transform and drawn as a
cartoon face on a textured background.

    python -m projects.facealign.demo_data <DATA_DIR>    # writes <DATA_DIR>/300W and <DATA_DIR>/300VW
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np

from projects.facealign.landmarks import write_pts
from shared.io import write_image, write_video


def _ellipse(cx: float, cy: float, rx: float, ry: float, angles) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(a), cy - ry * math.sin(a)) for a in angles]


def template(mouth_open: float = 0.0, eye_open: float = 1.0, brow: float = 0.0) -> np.ndarray:
    """The procedural 68-point shape in face units (outer eye corners at x = ±0.63, y = −0.1; chin at y = 1.2)."""
    pts: list[tuple[float, float]] = []
    pts += [(-math.cos(p), -0.2 + 1.4 * math.sin(p)) for p in np.linspace(0, math.pi, 17)]          # 0-16 jaw
    bx = np.linspace(-0.8, -0.2, 5)
    pts += [(x, -0.42 - brow - 0.1 * math.sin(math.pi * (x + 0.8) / 0.6)) for x in bx]                # 17-21
    pts += [(-x, y) for x, y in reversed(pts[17:22])]                                                # 22-26
    pts += [(0.0, y) for y in np.linspace(-0.2, 0.3, 4)]                                             # 27-30 bridge
    pts += [(x, 0.4 + 0.03 * (1 - abs(x) / 0.2)) for x in np.linspace(-0.2, 0.2, 5)]                 # 31-35
    ea = [math.pi, 2 * math.pi / 3, math.pi / 3, 0.0, -math.pi / 3, -2 * math.pi / 3]
    pts += _ellipse(-0.45, -0.1, 0.18, 0.07 * eye_open, ea)                                          # 36-41
    pts += _ellipse(0.45, -0.1, 0.18, 0.07 * eye_open, ea)                                           # 42-47
    cy = 0.75 + 0.05 * mouth_open
    pts += _ellipse(0.0, cy, 0.4, 0.15 + 0.1 * mouth_open, [math.pi - k * math.pi / 6 for k in range(7)])
    pts += _ellipse(0.0, cy, 0.4, 0.15 + 0.1 * mouth_open, [-k * math.pi / 6 for k in range(1, 6)])  # 48-59
    pts += _ellipse(0.0, cy, 0.3, 0.02 + 0.12 * mouth_open, [math.pi - k * math.pi / 4 for k in range(5)])
    pts += _ellipse(0.0, cy, 0.3, 0.02 + 0.12 * mouth_open, [-k * math.pi / 4 for k in range(1, 4)])  # 60-67
    return np.array(pts, dtype=np.float64)


def similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    """2×3 similarity (degrees)."""
    a = math.radians(angle)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth random texture (gives optical flow something to track)."""
    h, w = size
    small = rng.random((h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    img = 0.25 + 0.45 * big + 0.3 * (fine - 0.5) * 2
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def draw_face(canvas: np.ndarray, pts: np.ndarray, skin=(205, 160, 130)) -> np.ndarray:
    """Draw a cartoon face whose features sit on the 68 points (sub-pixel precise polygons)."""
    img = canvas.copy()
    sh = 4
    ip = lambda p: np.round(np.asarray(p) * (1 << sh)).astype(np.int32)  # noqa: E731
    jaw = pts[0:17]
    top_c, top_r = (jaw[0] + jaw[16]) / 2, np.linalg.norm(jaw[16] - jaw[0]) / 2
    ang = math.atan2(jaw[16][1] - jaw[0][1], jaw[16][0] - jaw[0][0])
    forehead = [top_c + top_r * np.array([math.cos(ang + t), math.sin(ang + t)]) * np.array([1, 1])
                for t in np.linspace(0, -math.pi, 12)]
    cv2.fillPoly(img, [ip(np.vstack([jaw, forehead[1:-1]]))], skin, cv2.LINE_AA, sh)
    d = np.linalg.norm(pts[45] - pts[36])
    thick = max(1, int(round(d * 0.06)))
    for brow in (pts[17:22], pts[22:27]):
        cv2.polylines(img, [ip(brow)], False, (70, 45, 30), thick, cv2.LINE_AA, sh)
    for eye in (pts[36:42], pts[42:48]):
        cv2.fillPoly(img, [ip(eye)], (245, 245, 240), cv2.LINE_AA, sh)
        c = eye.mean(0)
        cv2.circle(img, tuple(ip(c)), int(round(d * 0.05 * (1 << sh))), (40, 30, 20), -1, cv2.LINE_AA, sh)
    cv2.polylines(img, [ip(pts[27:31])], False, (150, 100, 80), thick, cv2.LINE_AA, sh)
    cv2.polylines(img, [ip(pts[31:36])], False, (120, 80, 60), thick, cv2.LINE_AA, sh)
    cv2.fillPoly(img, [ip(pts[48:60])], (180, 60, 70), cv2.LINE_AA, sh)
    cv2.fillPoly(img, [ip(pts[60:68])], (60, 20, 25), cv2.LINE_AA, sh)
    cv2.polylines(img, [ip(jaw)], False, (150, 110, 90), 1, cv2.LINE_AA, sh)
    return img


def random_face_params(rng: np.random.Generator, size: int) -> dict:
    return {"mouth_open": float(rng.uniform(0, 1)), "eye_open": float(rng.uniform(0.4, 1.3)),
            "brow": float(rng.uniform(-0.05, 0.08)), "scale": float(rng.uniform(0.22, 0.3) * size),
            "angle": float(rng.uniform(-15, 15)), "tx": float(size / 2 + rng.uniform(-0.08, 0.08) * size),
            "ty": float(size * 0.42 + rng.uniform(-0.08, 0.08) * size)}


def render_face(params: dict, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, 68×2 0-based points) for a parameter dict of :func:`random_face_params`."""
    shape = template(params["mouth_open"], params["eye_open"], params["brow"])
    m = similarity(params["scale"], params["angle"], params["tx"], params["ty"])
    pts = shape @ m[:, :2].T + m[:, 2]
    return draw_face(bg, pts), pts.astype(np.float32)


def synthetic_face(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One random synthetic face image (size×size) and its 68 points."""
    return render_face(random_face_params(rng, size), background((size, size), rng))


W300_FOLDERS = {"lfpw/trainset": "train", "helen/trainset": "train", "afw": "train",
                "lfpw/testset": "test", "helen/testset": "test", "ibug": "test"}


def write_300w_layout(root: str | Path, n_train: int = 6, n_test: int = 3, size: int = 128, seed: int = 0) -> Path:
    """``root`` laid out like the 300-W download: lfpw/{trainset,testset}, helen/{trainset,testset}, afw, ibug,
    each image with its 1-based ``.pts`` beside it."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for folder, split in W300_FOLDERS.items():
        for i in range(n_train if split == "train" else n_test):
            img, pts = synthetic_face(rng, size)
            stem = root / folder / f"image_{i + 1:04d}"
            write_image(stem.with_suffix(".png"), img)
            write_pts(stem.with_suffix(".pts"), pts)
    return root


def write_300vw_layout(root: str | Path, ids: tuple[str, ...] = ("001", "114", "203", "410"), frames: int = 12,
                       size: int = 128, seed: int = 0) -> Path:
    """``root`` laid out like 300-VW: ``<id>/vid.avi`` + ``<id>/annot/000001.pts …`` (frame k ↔ annotation k);
    each clip is a synthetic face moving and opening its mouth smoothly over a fixed textured background."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for vid in ids:
        bg = background((size, size), rng)
        a, b = random_face_params(rng, size), random_face_params(rng, size)
        imgs = []
        for k in range(frames):
            t = k / max(frames - 1, 1)
            p = {key: (1 - t) * a[key] + t * b[key] for key in a}
            img, pts = render_face(p, bg)
            imgs.append(img)
            write_pts(root / vid / "annot" / f"{k + 1:06d}.pts", pts)
        write_video(root / vid / "vid.avi", imgs, fps=25, crf=10)
    return root


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "data")
    write_300w_layout(out / "300W", n_train=40, n_test=10)
    write_300vw_layout(out / "300VW", frames=50)
    print(f"synthetic 300-W and 300-VW layouts written under {out}")
