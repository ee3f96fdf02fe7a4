"""5-point face alignment by a least-squares similarity transform onto a template (chapters 2, 3, 5).

Templates (points in crop pixels, order left eye, right eye, nose, left mouth corner, right mouth corner — the
MTCNN order): the SphereFace 96×112 (w×h) template, the ArcFace 112×112 one (= SphereFace shifted +8 px in x), and
``dlib`` 150×150: where MTCNN's 5 points fall in dlib's own face chips (``dlib.get_face_chip``, padding 0.25 — the
input of dlib's face embedder), so MTCNN-aligned crops feed that embedder the geometry it was trained on. Measured by
mapping MTCNN's points through dlib's chip transform on 20 real faces (the face-recognition photos, carphone frames,
takeo, astronaut, grace_hopper): mean eyes (46.9, 45.0) (102.5, 46.4), nose (75.4, 72.8), mouth (49.8, 104.5)
(97.1, 105.4), spread 1.3–4.5 px; made mirror-symmetric about the chip centre x = 74.5.
"""

from __future__ import annotations

import cv2
import numpy as np

from shared.errors import UserError

TEMPLATES: dict[str, tuple[tuple[int, int], np.ndarray]] = {
    "sphereface": ((96, 112), np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                                        [33.5493, 92.3655], [62.7299, 92.2041]])),
    "arcface": ((112, 112), np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                      [41.5493, 92.3655], [70.7299, 92.2041]])),
    "dlib": ((150, 150), np.array([[46.7, 45.7], [102.3, 45.7], [74.5, 72.8], [50.9, 104.9], [98.1, 104.9]])),
}


def template(name: str, size: tuple[int, int] | None = None) -> tuple[tuple[int, int], np.ndarray]:
    """(crop size (w, h), 5×2 points) of a named template, optionally rescaled to another crop size."""
    if name not in TEMPLATES:
        raise UserError(f"unknown alignment template {name!r} (known: {', '.join(TEMPLATES)})")
    base, pts = TEMPLATES[name]
    if size is None or tuple(size) == base:
        return base, pts.copy()
    return (int(size[0]), int(size[1])), pts * np.array([size[0] / base[0], size[1] / base[1]])


def similarity_transform(src: np.ndarray, dst: np.ndarray, allow_reflection: bool = False) -> np.ndarray:
    """The 2×3 matrix M (x' = M·[x, y, 1]) of the similarity (scale, rotation, translation) that maps ``src``
    points onto ``dst`` in the least-squares sense (closed form, Umeyama 1991). With ``allow_reflection`` the
    reflective fit is tried too and the one with the smaller residual kept (SphereFace's choice)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise UserError(f"alignment needs matching N×2 point sets (N ≥ 2), got {src.shape} and {dst.shape}")

    def fit(s: np.ndarray) -> np.ndarray:
        mu_s, mu_d = s.mean(0), dst.mean(0)
        cs, cd = s - mu_s, dst - mu_d
        var = (cs ** 2).sum() / len(s)
        cov = cd.T @ cs / len(s)
        u, d, vt = np.linalg.svd(cov)
        sign = np.eye(2)
        if np.linalg.det(u) * np.linalg.det(vt) < 0:
            sign[1, 1] = -1
        r = u @ sign @ vt
        scale = (d * np.diag(sign)).sum() / max(var, 1e-12)
        return np.hstack([scale * r, (mu_d - scale * r @ mu_s)[:, None]])

    m = fit(src)
    if allow_reflection:
        flip = np.diag([-1.0, 1.0])
        mr = fit(src @ flip) @ np.block([[flip, np.zeros((2, 1))], [np.zeros((1, 2)), np.ones((1, 1))]])
        if residual(mr, src, dst) < residual(m, src, dst):
            m = mr
    return m


def residual(m: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    """Root-mean-square distance between ``M(src)`` and ``dst``."""
    mapped = np.asarray(src) @ m[:, :2].T + m[:, 2]
    return float(np.sqrt(((mapped - np.asarray(dst)) ** 2).sum(1).mean()))


def align_face(image: np.ndarray, points: np.ndarray, name: str = "sphereface",
               size: tuple[int, int] | None = None, allow_reflection: bool = False,
               border: int = cv2.BORDER_CONSTANT) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` so its 5 ``points`` land on the template: returns (crop h×w×C, the 2×3 matrix used)."""
    (w, h), dst = template(name, size)
    m = similarity_transform(np.asarray(points, np.float64).reshape(5, 2), dst, allow_reflection)
    crop = cv2.warpAffine(np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border)
    return crop, m


def align_faces(image: np.ndarray, points: np.ndarray, name: str = "sphereface",
                size: tuple[int, int] | None = None) -> np.ndarray:
    """Every face of one image (points N×5×2) → N×h×w×C crops."""
    (w, h), _ = template(name, size)
    crops = [align_face(image, p, name, size)[0] for p in np.asarray(points).reshape(-1, 5, 2)]
    return np.stack(crops) if crops else np.zeros((0, h, w, image.shape[2]), image.dtype)
