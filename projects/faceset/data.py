"""Face data of chapter 2: alignment at load time (5 points → similarity warp onto the SphereFace 112×96 template,
Sec. 2.2.1), identity-folder datasets (``<root>/<identity>/<image>``: CASIA-WebFace for the backbone, MS-Celeb
subsets in sets of 3 for the aggregation, Sec. 2.3.1), and the evaluation protocols' image lists (LFW pairs,
IJB-C, set-vs-set folders — see :mod:`projects.faceset.protocols`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from shared.datamodule import eval_loader, train_loader
from shared.errors import UserError
from shared.face.align import align_face, template
from shared.io import IMAGE_EXTS, read_image


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 RGB → 3×H×W float in [0, 1] (Sec. 2.2.1: "each pixel … is normalized to [0, 1]"); a network trained
    with SphereFace's (x − 127.5)/128 applies it itself (``FaceSetNet(input_norm="sphereface")``)."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0


def get_mtcnn(weights_dir: str | Path | None = None, thresholds=None):
    """One MTCNN per process (data-loader workers each load their own); ``None``: the asset copy (make assets)."""
    from shared.face.mtcnn import load_mtcnn

    return load_mtcnn(weights_dir, "set mtcnn_dir or run `make assets`", thresholds)


class FaceAligner:
    """Image file → face crop of the template size (w×h, default SphereFace 96×112).

    Landmarks, in order of preference: the 5 ``points`` given with the image (IJB-C 5-point file, LFW landmark
    file; below ``min_score`` = none); MTCNN on the image when ``detect`` (the largest face; weights ``mtcnn_dir``,
    None = the asset copy; stage ``thresholds`` — SphereFace's preprocessing uses 0.6/0.7/0.9; detections cached per
    image file under ``cache_dir``); otherwise the image is taken as already aligned (``assume_aligned``) and only
    resized. A face without landmarks gets the *unaligned* crop — the centre crop of the template's aspect ratio,
    resized — and ``detected=False``, which the policies of Table 2.1 act on.

    ``detector="dlib"`` finds faces with dlib's HOG detector instead of MTCNN (``shared.face.dlib_models``): with the
    ``dlib`` template the crop is dlib's own 5-point face chip (what dlib's embedder was trained on), with another
    template its 68 points give the 5 (eye centres, nose tip, mouth corners) for the template warp."""

    def __init__(self, template_name: str = "sphereface", size: Sequence[int] | None = None, detect: bool = False,
                 mtcnn_dir: str | None = None, thresholds: Sequence[float] | None = None,
                 cache_dir: str | None = None, assume_aligned: bool = True, min_score: float = 0.0,
                 detector: str = "mtcnn") -> None:
        if detector not in DETECTORS:
            raise UserError(f"unknown face detector {detector!r} ({' | '.join(DETECTORS)})")
        (self.w, self.h), _ = template(template_name, tuple(size) if size else None)
        self.template_name, self.size = template_name, (self.w, self.h)
        self.detect, self.assume_aligned, self.min_score = detect, assume_aligned, min_score
        self.mtcnn_dir, self.thresholds, self.cache_dir = mtcnn_dir, thresholds, cache_dir
        self.detector_name = detector
        self._detector = None

    def detector(self):
        from shared.face.mtcnn import CachedDetector

        if self._detector is None:
            self._detector = CachedDetector(self.mtcnn_dir, tuple(self.thresholds) if self.thresholds else None,
                                            cache_dir=self.cache_dir)
        return self._detector

    def unaligned(self, img: np.ndarray) -> np.ndarray:
        """Centre crop with the template's aspect ratio, resized to the template size (no landmarks)."""
        h, w = img.shape[:2]
        target = self.w / self.h
        if w / h > target:
            cw = max(1, round(h * target))
            img = img[:, (w - cw) // 2:(w - cw) // 2 + cw]
        else:
            ch = max(1, round(w / target))
            img = img[(h - ch) // 2:(h - ch) // 2 + ch]
        return cv2.resize(img, (self.w, self.h), interpolation=cv2.INTER_AREA)

    def dlib_face(self, img: np.ndarray) -> np.ndarray | None:
        """The largest face dlib's HOG detector finds (one upsampling), or None."""
        from shared.face import dlib_models

        boxes, _ = dlib_models.detect(img, 1)
        return boxes[dlib_models.largest(boxes)] if len(boxes) else None

    def landmarks(self, img: np.ndarray, points: np.ndarray | None, score: float = 1.0,
                  path: str | Path | None = None) -> np.ndarray | None:
        if points is not None:
            return np.asarray(points, np.float64).reshape(5, 2) if score >= self.min_score else None
        if self.detect and self.detector_name == "dlib":  # dlib's 68 points → the MTCNN-order 5
            from shared.face import dlib_models

            box = self.dlib_face(img)
            return None if box is None else dlib_models.points68_to_5(dlib_models.landmarks68(img, box))
        if self.detect:
            faces = self.detector()(img, path)
            if len(faces) and faces.scores[faces.largest()] >= self.min_score:
                return faces.points[faces.largest()]
        return None

    def __call__(self, path: str | Path, points: np.ndarray | None = None,
                 score: float = 1.0) -> tuple[np.ndarray, bool, np.ndarray]:
        """(crop, detected, unaligned crop)."""
        img = read_image(path)
        unaligned = self.unaligned(img)
        if points is None and self.detect and self.detector_name == "dlib" and self.template_name == "dlib":
            from shared.face import dlib_models  # dlib's own 5-point chip, as its embedder was trained on

            box = self.dlib_face(img)
            if box is not None:
                return dlib_models.face_chip(img, box, size=self.w), True, unaligned
            return unaligned, False, unaligned
        pts = self.landmarks(img, points, score, path)
        if pts is not None:
            return align_face(img, pts, self.template_name, self.size)[0], True, unaligned
        if points is None and not self.detect and self.assume_aligned:
            return unaligned, True, unaligned
        return unaligned, False, unaligned


DETECTORS = ("mtcnn", "dlib")


def scan_identities(root: str | Path, min_images: int = 1) -> tuple[list[str], list[list[Path]]]:
    """``<root>/<identity>/<image>`` → (sorted identity names, their sorted image paths); identities with fewer
    than ``min_images`` images are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"identity folder root not found: {root}")
    names, images = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
        if len(files) >= min_images:
            names.append(d.name)
            images.append(files)
    if not names:
        raise UserError(f"no identity folders with ≥{min_images} image(s) under {root} "
                        "(expected <root>/<identity>/<image>)")
    return names, images


class FaceImages(Dataset):
    """Single faces: items (path, label, 5 points or None, score) → {image, label, index, detected[, unaligned]};
    optional random horizontal flip (training)."""

    def __init__(self, items: list[tuple], aligner: FaceAligner, flip: bool = False,
                 with_unaligned: bool = False) -> None:
        self.items, self.aligner, self.flip, self.with_unaligned = items, aligner, flip, with_unaligned

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        path, label = item[0], item[1]
        points = item[2] if len(item) > 2 else None
        score = item[3] if len(item) > 3 else 1.0
        crop, detected, unaligned = self.aligner(path, points, score)
        if self.flip and np.random.rand() < 0.5:
            crop = crop[:, ::-1]
        out = {"image": to_tensor(crop), "label": int(label), "index": i, "detected": bool(detected)}
        if self.with_unaligned:
            out["unaligned"] = to_tensor(unaligned)
        return out


class FaceSets(Dataset):
    """Sets of ``set_size`` faces of one identity (Sec. 2.3.1: groups of three images): item i draws identity
    i mod n without replacement when it has enough images (with replacement otherwise)."""

    def __init__(self, images: list[list[Path]], aligner: FaceAligner, set_size: int = 3,
                 sets_per_identity: int = 1, flip: bool = False) -> None:
        if set_size < 1:
            raise UserError(f"set_size must be ≥ 1, got {set_size}")
        self.images, self.aligner, self.set_size, self.flip = images, aligner, set_size, flip
        self.sets_per_identity = sets_per_identity

    def __len__(self) -> int:
        return len(self.images) * self.sets_per_identity

    def __getitem__(self, i: int) -> dict:
        label = i % len(self.images)
        files = self.images[label]
        pick = np.random.choice(len(files), self.set_size, replace=len(files) < self.set_size)
        crops = []
        for j in pick:
            crop = self.aligner(files[j])[0]
            if self.flip and np.random.rand() < 0.5:
                crop = crop[:, ::-1]
            crops.append(to_tensor(crop))
        return {"images": torch.stack(crops), "label": label}


class CachedFeatures(Dataset):
    """Per-face features saved by an earlier test run (``<run dir>/features/<test set>.npz``): evaluation re-scores
    them without reading or embedding a single image (e.g. mean pooling vs multi-column on one frozen backbone)."""

    def __init__(self, path: str | Path, expected: int) -> None:
        try:
            data = np.load(path)
            self.feats = torch.from_numpy(data["feats"]).float()
            self.detected = torch.from_numpy(data["detected"]).bool()
            self.feats_u = torch.from_numpy(data["feats_unaligned"]).float() if "feats_unaligned" in data else None
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(f"cannot read cached features {path}: {exc}") from exc
        if len(self.feats) != expected:
            raise UserError(f"cached features {path} hold {len(self.feats)} faces, the test set has {expected}")

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, i: int) -> dict:
        out = {"feature": self.feats[i], "index": i, "detected": bool(self.detected[i])}
        if self.feats_u is not None:
            out["feature_unaligned"] = self.feats_u[i]
        return out


def split_identities(names: list[str], images: list[list[Path]], count: int, seed: int = 0, min_images: int = 4
                     ) -> tuple[tuple[list[str], list[list[Path]]], list[tuple[str, list[Path]]]]:
    """The validation rule: ``count`` identities with at least ``min_images`` images (two sets of ≥ 2 each), drawn by
    :func:`shared.face.holdout.seeded_holdout` (a permutation seeded with ``seed`` of the sorted names), are held out
    of training → ((training names, their images), [(held-out name, images), …])."""
    from shared.face.holdout import seeded_holdout

    eligible = [n for n, files in zip(names, images) if len(files) >= min_images]
    if count > 0 and len(eligible) <= count:
        raise UserError(f"data.val_identities={count}: only {len(eligible)} identities have ≥{min_images} images")
    _, held = seeded_holdout(eligible, count, seed, f"identities with ≥{min_images} images")
    held_set = set(held)
    by_name = dict(zip(names, images))
    keep = [(n, f) for n, f in zip(names, images) if n not in held_set]
    return ([n for n, _ in keep], [f for _, f in keep]), [(n, by_name[n]) for n in held]


class FaceSetDataModule(pl.LightningDataModule):
    """Training on identity folders — ``mode=images`` (backbone, CASIA-WebFace layout) or ``mode=sets``
    (aggregation, ``set_size`` faces per item) — minus ``val_identities`` identities held out for validation (a
    seeded rule, :func:`split_identities`; scored set-vs-set as the protocol ``heldout``), plus evaluation protocols
    ``{name: {kind: folders | lfw | pairs | ijbc, root: …, …}}`` (see :func:`projects.faceset.protocols.build`).
    Fit refuses a validation image that is (by path or content) an image of a test set."""

    def __init__(self, train_root: str | None = None, mode: str = "images", set_size: int = 3,
                 sets_per_identity: int = 1, min_images: int = 1, batch_size: int = 256, eval_batch_size: int = 64,
                 num_workers: int = 4, template: str = "sphereface", size: Sequence[int] | None = None,
                 detect: bool = False, mtcnn_dir: str | None = None, mtcnn_thresholds: Sequence[float] | None = None,
                 mtcnn_cache: str | None = None, assume_aligned: bool = True, flip: bool = True,
                 val_identities: int = 100, val_seed: int = 0, val_min_images: int = 4,
                 val_sets: dict | None = None, test_sets: dict | None = None,
                 features_dir: str | None = None, detector: str = "mtcnn") -> None:
        super().__init__()
        if mode not in ("images", "sets"):
            raise UserError(f"data.mode must be images or sets, got {mode!r}")
        self.save_hyperparameters()
        self.identities: list[str] = []
        self.val_protocols: list = []
        self.test_protocols: list = []
        self.test_names: list[str] = []

    def aligner(self, **overrides) -> FaceAligner:
        h = self.hparams
        kw = dict(template_name=h.template, size=h.size, detect=h.detect, mtcnn_dir=h.mtcnn_dir,
                  thresholds=h.mtcnn_thresholds, cache_dir=h.mtcnn_cache, assume_aligned=h.assume_aligned,
                  detector=h.detector)
        return FaceAligner(**{**kw, **overrides})

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def _test_protocols(self) -> list:
        from projects.faceset.protocols import build

        specs = {k: v for k, v in (self.hparams.test_sets or {}).items() if v}
        return [build(name, spec, self) for name, spec in specs.items()]

    def setup(self, stage: str | None = None) -> None:
        from projects.faceset.protocols import FolderSets, build
        from shared.face.holdout import check_disjoint

        h = self.hparams
        if stage in (None, "fit", "validate") and not self.identities:
            if not h.train_root:
                raise UserError("training needs data.train_root=<folder of identity folders>")
            names, images = scan_identities(h.train_root, h.min_images)
            (names, images), held = split_identities(names, images, h.val_identities, h.val_seed, h.val_min_images)
            self.identities = names
            if h.mode == "images":
                items = [(p, label) for label, files in enumerate(images) for p in files]
                self.train_set = FaceImages(items, self.aligner(), flip=h.flip)
            else:
                self.train_set = FaceSets(images, self.aligner(), h.set_size, h.sets_per_identity, h.flip)
            self.val_protocols = ([FolderSets("heldout", aligner=self.aligner(), identities=held)] if held else [])
            self.val_protocols += [build(name, spec, self) for name, spec in (h.val_sets or {}).items() if spec]
            if not self.val_protocols:
                raise UserError("no validation data: set data.val_identities ≥ 1 (held out of the training "
                                "identities) or data.val_sets")
            self.test_protocols = self.test_protocols or self._test_protocols()
            self.test_names = [p.name for p in self.test_protocols]
            check_disjoint([f for p in self.val_protocols for f in p.files()],
                           {p.name: p.files() for p in self.test_protocols})
        if stage in (None, "test") and not self.test_protocols:
            self.test_protocols = self._test_protocols()
            self.test_names = [p.name for p in self.test_protocols]

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        return train_loader(self, self.train_set, h.batch_size, h.num_workers,
                            what="sets" if h.mode == "sets" else "faces")

    def val_dataloader(self) -> list[DataLoader]:
        return [eval_loader(p.dataset, self.hparams.eval_batch_size, self.hparams.num_workers)
                for p in self.val_protocols]

    def test_dataloader(self) -> list[DataLoader]:
        if not self.test_protocols:
            raise UserError("no test sets configured (data.test_sets)")
        loaders = []
        for p in self.test_protocols:
            ds = p.dataset
            cached = Path(self.hparams.features_dir) / f"{p.name}.npz" if self.hparams.features_dir else None
            if cached is not None and cached.is_file():
                ds = CachedFeatures(cached, len(p.dataset))
            loaders.append(eval_loader(ds, self.hparams.eval_batch_size, self.hparams.num_workers))
        return loaders
