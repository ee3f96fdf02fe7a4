"""Write scikit-image's real sample photos as a tiny HR image folder: ``python -m shared.demo_data DIR``.

DIR/train gets 11 photos (natural and scanned ones; not the synthetic colour wheel, whose saturated hues a tiny net
never sees elsewhere — as a validation photo it made the score collapse), DIR/val 3 others (cropped to at most
``side`` px, 256 by default, to keep demos fast).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from shared.io import write_image

TRAIN = ["chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "clock", "coins", "moon",
         "page", "cat"]
VAL = ["astronaut", "camera", "brick"]


def _load(name: str, side: int = 256) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    h, w = img.shape[:2]
    s = side
    y, x = max(0, (h - s) // 2), max(0, (w - s) // 2)
    return np.ascontiguousarray(img[y : y + s, x : x + s]).astype(np.uint8)


def write_demo_images(root: str | Path, train: list[str] = TRAIN, val: list[str] = VAL, side: int = 256) -> Path:
    root = Path(root)
    for split, names in (("train", train), ("val", val)):
        for n in names:
            dest = root / split / f"{n}.png"
            if not dest.exists():
                write_image(dest, _load(n, side))
    return root


if __name__ == "__main__":
    out = write_demo_images(sys.argv[1] if len(sys.argv) > 1 else "data/demo",
                            side=int(sys.argv[2]) if len(sys.argv) > 2 else 256)
    print(f"demo images in {out}")
