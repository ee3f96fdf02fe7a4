"""Face-alignment data (Section 3.3.1): 300-W still images, 300-VW videos, pseudo-videos (Section 3.4.1) and the
Lightning DataModule.

300-W layout (the iBUG download): ``<root>/{lfpw/trainset, lfpw/testset, helen/trainset, helen/testset, afw, ibug}``
with each image's 1-based ``.pts`` beside it. Train = LFPW-train + HELEN-train + AFW (3,148); common = LFPW-test +
HELEN-test (554); challenging = iBUG (135); full = both (689).

300-VW layout: ``<root>/<id>/vid.avi`` + ``<root>/<id>/annot/000001.pts …`` (frame k ↔ annotation k, 1-based);
test categories 1/2/3 are lists of ids in ``conf/facealign/data/300vw.yaml``; known-bad frames are skipped through
``skip_frames: {id: [frame numbers]}``.

Faces are cropped from the ground-truth landmark box (square, ``margin`` on each side) — with random shift/scale
jitter, horizontal flips that permute the 68 indices and annotation-noise injection (Fig. 3.9) for training.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from projects.facealign.landmarks import (
    add_annotation_noise,
    apply_affine,
    apply_homography,
    crop_transform,
    flip_points,
    invert_affine,
    jittered_transform,
    landmark_box,
    read_pts,
    warp_crop,
)
from projects.facealign.pseudo_video import interpolate, pseudo_video, random_storyboard, render
from shared.datamodule import SetsDataModule
from shared.errors import UserError
from shared.io import IMAGE_EXTS, read_image

W300_SPLITS = {
    "train": ["lfpw/trainset", "helen/trainset", "afw"],
    "common": ["lfpw/testset", "helen/testset"],
    "challenging": ["ibug"],
    "full": ["lfpw/testset", "helen/testset", "ibug"],
}


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0


def list_300w(root: str | Path, folders: list[str]) -> list[tuple[Path, Path]]:
    """(image, .pts) pairs of the given 300-W sub-folders (every image that has a ``.pts`` beside it)."""
    root = Path(root)
    pairs: list[tuple[Path, Path]] = []
    for folder in folders:
        d = root / folder
        if not d.is_dir():
            raise UserError(f"300-W folder not found: {d} (data.root is {root})")
        found = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.with_suffix(".pts").is_file())
        if not found:
            raise UserError(f"no annotated images (image + .pts) in {d}")
        pairs += [(p, p.with_suffix(".pts")) for p in found]
    return pairs


class FaceImages(Dataset):
    """300-W-style still faces → crops. Training: jittered crop, flip (index permutation), annotation noise
    (σ × inter-ocular, impulse), optional pseudo-video photometric/projective augmentation of one random frame.
    Items: ``image`` 3×S×S, ``target`` N×2 (normalised crop coordinates, noisy when training), ``clean`` N×2,
    ``to_image`` 2×3 crop → image pixels, ``gt`` N×2 image pixels."""

    def __init__(self, root: str | Path, folders: list[str], size: int = 112, margin: float = 0.25,
                 train: bool = False, jitter_shift: float = 0.05, jitter_scale: float = 0.1, flip: bool = True,
                 noise_sigma: float = 0.0, impulse_prob: float = 0.0, impulse_scale: float = 0.2,
                 pseudo_aug: float = 0.0, aug_strength: float = 1.0, limit: int | None = None) -> None:
        self.items = list_300w(root, list(folders))[:limit]
        self.size, self.margin, self.train = size, margin, train
        self.jitter_shift, self.jitter_scale, self.flip = jitter_shift, jitter_scale, flip
        self.noise_sigma, self.impulse_prob, self.impulse_scale = noise_sigma, impulse_prob, impulse_scale
        self.pseudo_aug, self.aug_strength = pseudo_aug, aug_strength

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        img_path, pts_path = self.items[i]
        img, pts = read_image(img_path), read_pts(pts_path).astype(np.float64)
        if pts.shape != (68, 2):
            raise UserError(f"{pts_path}: expected 68 points, got {len(pts)}")
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item())) if self.train else None
        clean = pts
        if self.train:
            if self.pseudo_aug > 0 and rng.random() < self.pseudo_aug:
                a, b = random_storyboard(rng, self.aug_strength)
                frame, hm = render(img, interpolate(a, b, float(rng.random())), rng)
                img, pts = frame, apply_homography(hm, pts)
            if self.flip and rng.random() < 0.5:
                img, pts = np.ascontiguousarray(img[:, ::-1]), flip_points(pts, img.shape[1])
            clean = pts
            pts = add_annotation_noise(pts, rng, self.noise_sigma, self.impulse_prob, self.impulse_scale)
            m = jittered_transform(landmark_box(clean), self.size, rng, self.margin, self.jitter_shift,
                                   self.jitter_scale)
        else:
            m = crop_transform(landmark_box(pts), self.size, self.margin)
        crop = warp_crop(img, m, self.size)
        k = 1.0 / (self.size - 1)
        return {"image": _to_tensor(crop), "target": torch.from_numpy(apply_affine(m, pts) * k).float(),
                "clean": torch.from_numpy(apply_affine(m, clean) * k).float(),
                "to_image": torch.from_numpy(invert_affine(m)).float(), "gt": torch.from_numpy(clean).float()}


def _video_item(frames: list[np.ndarray], gts: list[np.ndarray], size: int, margin: float, with_frames: bool,
                boxes: list[np.ndarray] | None = None) -> dict:
    crops, to_img = [], []
    for t, (f, g) in enumerate(zip(frames, gts)):
        m = crop_transform(boxes[t] if boxes is not None else landmark_box(g), size, margin)
        crops.append(_to_tensor(warp_crop(f, m, size)))
        to_img.append(torch.from_numpy(invert_affine(m)).float())
    item = {"crops": torch.stack(crops), "to_image": torch.stack(to_img),
            "gt": torch.from_numpy(np.stack(gts)).float()}
    if with_frames:  # gray is all the flow fusion needs (a third of the memory of RGB)
        item["frames"] = torch.from_numpy(np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]))
    return item


def box_iou(boxes: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """IoU of each [x0, y0, x1, y1] box with ``ref``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(boxes[:, 2], ref[2]) - np.maximum(boxes[:, 0], ref[0]), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], ref[3]) - np.maximum(boxes[:, 1], ref[1]), 0, None)
    inter = iw * ih
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + (ref[2] - ref[0]) * (ref[3] - ref[1]) - inter, 1e-12)


class DetectedFaces(Dataset):
    """300-W test faces under the detector-box protocol: the face box is the detection (MTCNN by default) that
    overlaps the ground-truth landmark box most, with IoU ≥ ``min_iou``; a face the detector misses keeps its
    landmark box and is counted as a miss. The model then predicts from that box the way ``infer`` does (crop,
    re-crop from the predicted landmarks ``model.refine_iters`` times). Items: the full image (uint8 H×W×3), ``box``,
    ``detected``, ``gt`` (68×2 image pixels). ``detector``: any callable image → N×4 boxes (tests)."""

    def __init__(self, root: str | Path, folders: list[str], mtcnn_dir: str | None = None, min_iou: float = 0.3,
                 limit: int | None = None, detector=None, **_) -> None:
        self.items = list_300w(root, list(folders))[:limit]
        self.mtcnn_dir, self.min_iou, self.detector = mtcnn_dir, min_iou, detector

    def __len__(self) -> int:
        return len(self.items)

    def _detect(self, img: np.ndarray) -> np.ndarray:
        if self.detector is None:
            from shared.face.mtcnn import load_mtcnn

            mtcnn = load_mtcnn(self.mtcnn_dir, "detector-box test set: set its mtcnn_dir or run `make assets`")
            self.detector = lambda image: mtcnn(image).boxes
        return np.asarray(self.detector(img), dtype=np.float64).reshape(-1, 4)

    def __getitem__(self, i: int) -> dict:
        img_path, pts_path = self.items[i]
        img, pts = read_image(img_path), read_pts(pts_path).astype(np.float64)
        if pts.shape != (68, 2):
            raise UserError(f"{pts_path}: expected 68 points, got {len(pts)}")
        ref = landmark_box(pts)
        boxes = self._detect(img)
        iou = box_iou(boxes, ref) if len(boxes) else np.zeros(0)
        hit = len(iou) > 0 and iou.max() >= self.min_iou
        box = boxes[int(iou.argmax())] if hit else ref
        return {"full": torch.from_numpy(np.ascontiguousarray(img)), "box": torch.from_numpy(box.copy()),
                "detected": bool(hit), "gt": torch.from_numpy(pts).float()}


def parse_frames(spec, what: str = "frames") -> set[int]:
    """Frame numbers from a list (ints or "a-b" ranges) or one comma-separated string such as "14, 147-150"."""
    items = spec.replace(",", " ").split() if isinstance(spec, str) else [spec] if isinstance(spec, int) else spec
    out: set[int] = set()
    for item in items:
        text = str(item).strip()
        try:
            if "-" in text.lstrip("-"):
                a, b = (int(x) for x in text.split("-"))
                if b < a:
                    raise ValueError
                out.update(range(a, b + 1))
            else:
                out.add(int(text))
        except ValueError:
            raise UserError(f"{what}: {text!r} is neither a frame number nor a range a-b") from None
    return out


class VideoClips(Dataset):
    """300-VW: one item per video — crops of every annotated frame (from that frame's ground-truth box), their
    crop → image transforms, the ground truth and (``with_frames``) the full gray frames for flow fusion (a whole
    video is held in memory: ~0.7 GB for 3,000 frames of 640×360; ``max_frames`` caps it)."""

    def __init__(self, root: str | Path, ids: list[str | int], size: int = 112, margin: float = 0.25,
                 skip_frames: dict | None = None, max_frames: int | None = None, with_frames: bool = True) -> None:
        self.root = Path(root)
        self.ids = [f"{int(v):03d}" if str(v).isdigit() else str(v) for v in ids]
        for vid in self.ids:
            if not (self.root / vid / "vid.avi").is_file() or not (self.root / vid / "annot").is_dir():
                raise UserError(f"300-VW video {vid} not found: expected {self.root / vid}/vid.avi and annot/")
        self.skip = {f"{int(k):03d}" if str(k).isdigit() else str(k): parse_frames(v, f"skip_frames[{k}]")
                     for k, v in (skip_frames or {}).items()}
        self.size, self.margin, self.max_frames, self.with_frames = size, margin, max_frames, with_frames

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        import av

        vid = self.ids[i]
        annots = {int(p.stem): p for p in (self.root / vid / "annot").glob("*.pts")}
        frames, gts = [], []
        path = self.root / vid / "vid.avi"
        try:
            with av.open(str(path)) as container:
                for k, frame in enumerate(container.decode(video=0), start=1):
                    if self.max_frames is not None and len(frames) >= self.max_frames:
                        break
                    if k in annots and k not in self.skip.get(vid, set()):
                        gt = read_pts(annots[k]).astype(np.float64)
                        if gt.shape != (68, 2):
                            raise UserError(f"{annots[k]}: expected 68 points, got {len(gt)}")
                        frames.append(frame.to_ndarray(format="rgb24"))
                        gts.append(gt)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - any FFmpeg error means a bad file
            raise UserError(f"cannot decode video {path}: {exc}") from exc
        if len(frames) < 2:
            raise UserError(f"300-VW video {vid}: fewer than two annotated frames")
        return {"name": vid, **_video_item(frames, gts, self.size, self.margin, self.with_frames)}


class PseudoVideos(Dataset):
    """Stability test set (Figs. 3.3, 3.4, 3.10): each 300-W test image becomes a pseudo-video (random storyboard,
    seeded by the index) cropped with one fixed box per video (a fixed camera), ground truth exact. ``static``
    keeps only the photometric changes (gain, noise, blur): an unmoved face, the setting of STD (Eq. 3.2)."""

    def __init__(self, root: str | Path, folders: list[str], size: int = 112, margin: float = 0.25,
                 frames: int = 25, strength: float = 1.0, limit: int | None = None, with_frames: bool = True,
                 seed: int = 0, static: bool = False) -> None:
        self.items = list_300w(root, list(folders))[:limit]
        self.size, self.margin, self.frames, self.strength = size, margin, frames, strength
        self.with_frames, self.seed, self.static = with_frames, seed, static

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        img_path, pts_path = self.items[i]
        img, pts = read_image(img_path), read_pts(pts_path).astype(np.float64)
        rng = np.random.default_rng(self.seed * 100003 + i)
        a, b = random_storyboard(rng, self.strength)
        if self.static:
            a, b = (replace(s, scale=1.0, rotation=0.0, shift_x=0.0, shift_y=0.0, persp_x=0.0, persp_y=0.0)
                    for s in (a, b))
        frames, gts, _ = pseudo_video(img, pts, a, b, fps=self.frames, duration=1.0, seed=self.seed + i)
        x0, y0 = gts[..., 0].min(), gts[..., 1].min()
        box = np.array([x0, y0, gts[..., 0].max(), gts[..., 1].max()])
        return {"name": img_path.stem, **_video_item(list(frames), list(gts.astype(np.float64)), self.size,
                                                      self.margin, self.with_frames, [box] * len(frames))}




class FaceAlignDataModule(SetsDataModule):
    """Train on 300-W train (optionally with annotation noise / pseudo-video augmentation), validate on a slice of a
    test split, test on named sets: ``{name: {kind: 300w | 300vw | pseudo, …}}``."""

    def __init__(self, root: str, train_folders: list[str] | None = None, val_folders: list[str] | None = None,
                 test_sets: dict[str, dict] | None = None, size: int = 112, margin: float = 0.25,
                 jitter_shift: float = 0.05, jitter_scale: float = 0.1, flip: bool = True, noise_sigma: float = 0.0,
                 impulse_prob: float = 0.0, impulse_scale: float = 0.2, pseudo_aug: float = 0.0,
                 aug_strength: float = 1.0, batch_size: int = 32, num_workers: int = 4, val_limit: int | None = None,
                 train_limit: int | None = None, vw_root: str | None = None,
                 skip_frames: dict | None = None, mtcnn_dir: str | None = None) -> None:
        # vw_root / skip_frames / mtcnn_dir are shared by the test_sets entries (interpolated in the config)
        super().__init__()
        self.save_hyperparameters()
        self.test_names: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        geo = dict(size=hp.size, margin=hp.margin)
        if stage in (None, "fit"):
            self.train_set = FaceImages(hp.root, hp.train_folders or W300_SPLITS["train"], train=True,
                                        jitter_shift=hp.jitter_shift, jitter_scale=hp.jitter_scale, flip=hp.flip,
                                        noise_sigma=hp.noise_sigma, impulse_prob=hp.impulse_prob,
                                        impulse_scale=hp.impulse_scale, pseudo_aug=hp.pseudo_aug,
                                        aug_strength=hp.aug_strength, limit=hp.train_limit, **geo)
        if stage in (None, "fit", "validate"):
            self.val_set = FaceImages(hp.root, hp.val_folders or W300_SPLITS["common"], limit=hp.val_limit, **geo)
        if stage in (None, "test"):
            self.build_test_sets({"300w": lambda spec: FaceImages(**{**geo, "root": hp.root, **spec}),
                                  "300w_detected": lambda spec: DetectedFaces(**{"root": hp.root, **spec}),
                                  "300vw": lambda spec: VideoClips(**{**geo, **spec}),
                                  "pseudo": lambda spec: PseudoVideos(**{**geo, "root": hp.root, **spec})}, "300w")
