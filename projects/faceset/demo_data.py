"""Synthetic identities for tests and the smoke experiment (no face data set is available offline): each identity
is a fixed smooth colour pattern, each of its images a jittered, noisy view (brightness, shift, noise). Written in
the real layouts: identity folders (CASIA / MS-Celeb), LFW (``<name>/<name>_0001.jpg`` + ``pairs.txt`` + a
SphereFace-style landmark file) and IJB-C (``loose_crop/`` + ``meta/`` files).

``python -m projects.faceset.demo_data [out_dir]`` writes ``<out_dir>/{train,val,test,lfw,ijbc}``
(default ``$DATA_DIR/faceset_tiny``, as ``data=tiny`` expects)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

from shared.face.align import template
from shared.io import atomic_write_text, write_image

W, H = 96, 112
CANVAS, OFFSET = 128, (16, 8)  # LFW/IJB-C "loose crops": the face pasted at (x, y) offset in a 128² canvas


def identity_images(n_ids: int, n_imgs: int, seed: int = 0) -> list[list[np.ndarray]]:
    """n_ids × n_imgs uint8 112×96 RGB images."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_ids):
        base = cv2.resize(rng.uniform(30, 225, (5, 4, 3)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
        imgs = []
        for _ in range(n_imgs):
            dx, dy = rng.integers(-3, 4, 2)
            m = np.float32([[1, 0, dx], [0, 1, dy]])
            img = cv2.warpAffine(base, m, (W, H), borderMode=cv2.BORDER_REFLECT)
            img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 8, img.shape)
            imgs.append(np.clip(img, 0, 255).astype(np.uint8))
        out.append(imgs)
    return out


def write_identity_folders(root: Path, images: list[list[np.ndarray]], prefix: str = "id") -> list[str]:
    names = []
    for i, imgs in enumerate(images):
        name = f"{prefix}{i:03d}"
        names.append(name)
        for k, img in enumerate(imgs):
            write_image(root / name / f"{k:03d}.png", img)
    return names


def _canvas(img: np.ndarray) -> np.ndarray:
    out = np.full((CANVAS, CANVAS, 3), 90, np.uint8)
    out[OFFSET[1]:OFFSET[1] + H, OFFSET[0]:OFFSET[0] + W] = img
    return out


def canvas_points() -> np.ndarray:
    """The 5 landmarks of a pasted face = the SphereFace template moved by the paste offset."""
    return template("sphereface")[1] + np.array(OFFSET, np.float64)


def write_lfw_layout(root: Path, images: list[list[np.ndarray]], folds: int = 2, undetected: int = 2) -> None:
    """LFW layout: images ``Name/Name_000k.jpg``, ``pairs.txt`` (``folds`` blocks of genuine then impostor
    pairs), ``lfw_landmark.txt`` listing 5 points of every image but the first ``undetected`` ones."""
    names = [f"Person_{i}" for i in range(len(images))]
    for name, imgs in zip(names, images):
        for k, img in enumerate(imgs, 1):
            write_image(root / name / f"{name}_{k:04d}.jpg", _canvas(img))
    rng = np.random.default_rng(1)
    n = len(images)
    per = max(2, n // folds)
    lines = [f"{folds}\t{per}"]
    for _ in range(folds):
        for _ in range(per):
            i = int(rng.integers(n))
            a, b = rng.choice(len(images[i]), 2, replace=False) + 1
            lines.append(f"{names[i]}\t{a}\t{b}")
        for _ in range(per):
            i, j = rng.choice(n, 2, replace=False)
            lines.append(f"{names[i]}\t{rng.integers(len(images[i])) + 1}\t{names[j]}\t"
                         f"{rng.integers(len(images[j])) + 1}")
    atomic_write_text(root / "pairs.txt", "\n".join(lines) + "\n")
    pts = " ".join(f"{v:.0f}" for v in canvas_points().ravel())
    marks = [f"{name}/{name}_{k:04d}.jpg\t{pts.replace(' ', chr(9))}" for name, imgs in zip(names, images)
             for k in range(1, len(imgs) + 1)]
    atomic_write_text(root / "lfw_landmark.txt", "\n".join(marks[undetected:]) + "\n")


def write_ijbc_layout(root: Path, images: list[list[np.ndarray]], low_score: int = 1) -> dict:
    """IJB-C layout: per identity i two templates (2i+1: first half of its images, 2i+2: second half), images
    paired into media; G1 enrols the first-half templates of even identities, G2 of odd ones, the probes are
    all second-half templates; every template pair is listed. The first ``low_score`` faces get score 0.1."""
    faces, pts_lines, g1, g2, probe = [], [], [], [], []
    k, media = 0, 1000
    pts = " ".join(f"{v:.2f}" for v in canvas_points().ravel())
    for i, imgs in enumerate(images):
        half = (len(imgs) + 1) // 2
        for t, chunk in ((2 * i + 1, imgs[:half]), (2 * i + 2, imgs[half:])):
            for j, img in enumerate(chunk):
                k += 1
                name = f"{k}.jpg"
                write_image(root / "loose_crop" / name, _canvas(img))
                if j % 2 == 0:
                    media += 1
                faces.append(f"{name} {t} {media}")
                pts_lines.append(f"{name} {pts} {0.1 if k <= low_score else 0.999}")
                row = f"{t},{i + 100},img/{name}"
                (probe if t % 2 == 0 else (g1 if i % 2 == 0 else g2)).append(row)
    tids = sorted({int(f.split()[1]) for f in faces})
    pairs = [f"{a} {b} {int((a - 1) // 2 == (b - 1) // 2)}" for a in tids for b in tids if a % 2 == 1 and b % 2 == 0]
    meta = root / "meta"
    atomic_write_text(meta / "ijbc_face_tid_mid.txt", "\n".join(faces) + "\n")
    atomic_write_text(meta / "ijbc_template_pair_label.txt", "\n".join(pairs) + "\n")
    atomic_write_text(meta / "ijbc_name_5pts_score.txt", "\n".join(pts_lines) + "\n")
    header = "TEMPLATE_ID,SUBJECT_ID,FILENAME"
    for fname, rows in (("ijbc_1N_gallery_G1.csv", g1), ("ijbc_1N_gallery_G2.csv", g2),
                        ("ijbc_1N_probe_mixed.csv", probe)):
        atomic_write_text(meta / fname, "\n".join([header, *rows]) + "\n")
    return {"faces": len(faces), "templates": len(tids), "pairs": len(pairs)}


def write_tiny(root: Path, seed: int = 0) -> Path:
    """The ``data=tiny`` layout: train (12 identities × 8), val and test (6 × 4 each, unseen identities), LFW and
    IJB-C fixtures built from the test identities."""
    train = identity_images(12, 8, seed)
    held = identity_images(12, 4, seed + 1)
    write_identity_folders(root / "train", train)
    write_identity_folders(root / "val", held[:6], "val")
    write_identity_folders(root / "test", held[6:], "test")
    write_lfw_layout(root / "lfw", held[6:])
    write_ijbc_layout(root / "ijbc", held[6:])
    return root


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(os.environ.get("DATA_DIR", "data")) / "faceset_tiny"
    write_tiny(out)
    print(f"wrote the tiny face-set layout to {out}")


if __name__ == "__main__":
    main()
