"""Face-alignment data (Section 3.3.1): 300-W still images, 300-VW videos (test clips, and training frames with raw
or corrected annotations, Section 3.3.2), pseudo-videos (Section 3.4.1) and the Lightning DataModule.

300-W layout (the iBUG download): ``<root>/{lfpw/trainset, lfpw/testset, helen/trainset, helen/testset, afw, ibug}``
with each image's 1-based ``.pts`` beside it. Train = LFPW-train + HELEN-train + AFW (3,148); common = LFPW-test +
HELEN-test (554); challenging = iBUG (135); full = both (689). Validation = ``val_holdout`` training images held
out by a seeded rule (:func:`split_holdout`), never a test image.

300-VW layout: ``<root>/<id>/vid.avi`` + ``<root>/<id>/annot/000001.pts …`` (frame k ↔ annotation k, 1-based); the
50 training videos are :data:`VW_TRAIN_IDS`, test categories 1/2/3 are lists of ids in
``conf/facealign/data/300vw.yaml``; known-bad frames are skipped through ``skip_frames: {id: [frame numbers]}``.
Corrected annotations (``python -m projects.facealign.correct_300vw``) have the same ``<id>/annot/`` layout under
their own root. Training frames are decoded once into a cache (:class:`FrameCache`).

Faces are cropped from the ground-truth landmark box (square, ``margin`` on each side) — with random shift/scale
jitter, horizontal flips that permute the 68 indices and annotation-noise injection (Fig. 3.9, Table 3.1) for
training — or, under the detector-box protocol, from the MTCNN detection of the face (300-W and 300-VW).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from projects.facealign.landmarks import (
    NOISE_TYPES,
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
from shared.face.holdout import check_disjoint, seeded_holdout
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


def split_holdout(items: list, count: int, seed: int = 0) -> tuple[list, list]:
    """The validation rule (:func:`shared.face.holdout.seeded_holdout`): ``count`` (image, .pts) pairs drawn by a
    permutation seeded with ``seed`` from the sorted list → (training pairs, validation pairs)."""
    return seeded_holdout(items, count, seed, "training images (data.val_holdout)")


class FaceImages(Dataset):
    """300-W-style still faces → crops. Training: jittered crop, flip (index permutation), annotation noise of
    ``noise_type`` (Table 3.1: σ × inter-ocular for gaussian/poisson, ``noise_prob`` per coordinate for
    bernoulli/salt_pepper/impulse), optional pseudo-video photometric/projective augmentation of one random frame.
    Items: ``image`` 3×S×S, ``target`` N×2 (normalised crop coordinates, noisy when training; coordinates dropped by
    Bernoulli noise are 0), ``valid`` N×2 (1 = the coordinate was not dropped), ``clean`` N×2, ``to_image`` 2×3
    crop → image pixels, ``gt`` N×2 image pixels. ``items`` (image, .pts) pairs replace the folder listing."""

    def __init__(self, root: str | Path | None = None, folders: list[str] | None = None, size: int = 112,
                 margin: float = 0.25, train: bool = False, jitter_shift: float = 0.05, jitter_scale: float = 0.1,
                 flip: bool = True, noise_sigma: float = 0.0, noise_type: str = "gaussian", noise_prob: float = 0.0,
                 noise_spread: float = 0.2, poisson_lam: float = 4.0, pseudo_aug: float = 0.0,
                 aug_strength: float = 1.0, limit: int | None = None,
                 items: list[tuple[Path, Path]] | None = None) -> None:
        self.items = (list(items) if items is not None else list_300w(root, list(folders or [])))[:limit]
        if noise_type not in NOISE_TYPES:
            raise UserError(f"data.noise_type: unknown annotation noise {noise_type!r} ({' | '.join(NOISE_TYPES)})")
        self.size, self.margin, self.train = size, margin, train
        self.jitter_shift, self.jitter_scale, self.flip = jitter_shift, jitter_scale, flip
        self.noise = dict(sigma=noise_sigma, kind=noise_type, prob=noise_prob, spread=noise_spread, lam=poisson_lam)
        self.pseudo_aug, self.aug_strength = pseudo_aug, aug_strength

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, pts_path = self.items[i]
        img, pts = read_image(img_path), read_pts(pts_path).astype(np.float64)
        if pts.shape != (68, 2):
            raise UserError(f"{pts_path}: expected 68 points, got {len(pts)}")
        return img, pts

    def __getitem__(self, i: int) -> dict:
        img, pts = self.load(i)
        # training randomness comes from the global generators, which the shared loader seeds per sample
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
            pts = add_annotation_noise(pts, rng, **self.noise)
            m = jittered_transform(landmark_box(clean), self.size, rng, self.margin, self.jitter_shift,
                                   self.jitter_scale)
        else:
            m = crop_transform(landmark_box(pts), self.size, self.margin)
        crop = warp_crop(img, m, self.size)
        k = 1.0 / (self.size - 1)
        valid = np.isfinite(pts)  # Bernoulli-dropped coordinates (the crop map is axis-aligned: x stays x)
        target = apply_affine(m, np.where(valid, pts, 0.0)) * k
        return {"image": _to_tensor(crop), "target": torch.from_numpy(np.where(valid, target, 0.0)).float(),
                "valid": torch.from_numpy(valid).float(),
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


# the 50 training videos of 300-VW (every id not in a test category; as in mmpose's 300-VW converter)
VW_TRAIN_IDS = ["001", "002", "003", "004", "007", "009", "010", "011", "013", "015", "016", "017", "018", "019",
                "020", "022", "025", "027", "028", "029", "031", "033", "034", "035", "037", "039", "041", "043",
                "044", "046", "047", "048", "049", "053", "057", "059", "112", "113", "115", "119", "120", "123",
                "138", "143", "144", "160", "204", "205", "223", "225"]


def vw_id(v) -> str:
    """A 300-VW video id as its folder name (``114`` → ``"114"``, ``1`` → ``"001"``)."""
    return f"{int(v):03d}" if str(v).isdigit() else str(v)


def annotated_frames(annot_dir: Path, skip: set[int] | None = None) -> dict[int, Path]:
    """{1-based frame number: .pts} of a 300-VW ``annot/`` folder, without the ``skip`` frames."""
    if not annot_dir.is_dir():
        raise UserError(f"300-VW annotations not found: {annot_dir}")
    out = {int(f.stem): f for f in annot_dir.glob("*.pts") if f.stem.isdigit()}
    return {k: out[k] for k in sorted(out) if k not in (skip or set())}


def sample_frames(numbers: list[int], per_video: int | None = None, stride: int | None = None) -> list[int]:
    """The training frames of one video: ``per_video`` evenly spaced annotated frames (first and last included), or
    every ``stride``-th one, or all of them."""
    numbers = sorted(numbers)
    if per_video and per_video < len(numbers):
        idx = np.unique(np.round(np.linspace(0, len(numbers) - 1, per_video)).astype(int))
        return [numbers[i] for i in idx]
    if stride and stride > 1:
        return numbers[::stride]
    return numbers


def file_key(path: Path, *extra) -> str:
    """A short key that changes when the file (resolved path, size, modification time) or ``extra`` changes."""
    st = path.stat()
    text = "|".join(map(str, (path.resolve(), st.st_size, st.st_mtime_ns, *extra)))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class FrameCache:
    """Frames of a video decoded once (sequentially, with PyAV) into ``<cache_dir>/frames/<id>-<key>/<k>.png``
    (lossless; ``k`` 1-based as the annotations). The key follows the video file, so a replaced video is decoded
    again; files are written atomically, so concurrent workers at worst decode twice."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = Path(cache_dir) / "frames"

    def folder(self, video: Path) -> Path:
        return self.root / f"{video.parent.name}-{file_key(video)}"

    def path(self, video: Path, k: int) -> Path:
        return self.folder(video) / f"{k:06d}.png"

    def missing(self, video: Path, frames: list[int]) -> list[int]:
        folder = self.folder(video)
        return [k for k in frames if not (folder / f"{k:06d}.png").is_file()]

    def extract(self, video: Path, frames: list[int]) -> int:
        """Decode ``video`` up to the last wanted frame and write the wanted frames not cached yet; returns the
        number written."""
        from shared.io import iter_video, write_image

        todo = set(self.missing(video, frames))
        if not todo:
            return 0
        folder, last, written = self.folder(video), max(todo), 0
        for k, frame in enumerate(iter_video(video, max_frames=last), start=1):
            if k in todo:
                write_image(folder / f"{k:06d}.png", frame)
                written += 1
        if written < len(todo):
            raise UserError(f"{video}: annotations up to frame {last} but the video has fewer frames")
        return written


class VWFrames(FaceImages):
    """300-VW training frames (Section 3.3.2: "Ours-new" trains on 300-W + the corrected 300-VW frames): for each
    video id, ``frames_per_video`` evenly spaced annotated frames (or every ``frame_stride``-th), without the
    ``skip_frames``; the image is the frame decoded from ``<root>/<id>/vid.avi`` (cached once as PNG), the
    landmarks are ``<annot_root>/<id>/annot/<k>.pts`` — the raw annotations (``annot_root`` = ``root``) or the
    corrected ones written by ``correct_300vw``. Same crops and augmentation as :class:`FaceImages`."""

    def __init__(self, root: str | Path, ids: list[str | int] | None = None, annot_root: str | Path | None = None,
                 cache_dir: str | Path = ".cache/facealign", frames_per_video: int | None = 60,
                 frame_stride: int | None = None, skip_frames: dict | None = None, **kw) -> None:
        self.root = Path(root)
        self.annot_root = Path(annot_root) if annot_root else self.root
        self.ids = [vw_id(v) for v in (ids if ids is not None else VW_TRAIN_IDS)]
        self.cache = FrameCache(cache_dir)
        skip = {vw_id(k): parse_frames(v, f"skip_frames[{k}]") for k, v in (skip_frames or {}).items()}
        items, self.wanted = [], {}
        for vid in self.ids:
            video = self.root / vid / "vid.avi"
            if not video.is_file():
                raise UserError(f"300-VW video {vid} not found: {video}")
            annot = self.annot_root / vid / "annot"
            if not annot.is_dir():
                hint = (" (corrected annotations: python -m projects.facealign.correct_300vw <300VW> <out>)"
                        if self.annot_root != self.root else "")
                raise UserError(f"300-VW annotations of video {vid} not found: {annot}{hint}")
            found = annotated_frames(annot, skip.get(vid))
            frames = sample_frames(list(found), frames_per_video, frame_stride)
            self.wanted[video] = frames
            items += [(self.cache.path(video, k), found[k]) for k in frames]
        if not items:
            raise UserError(f"no annotated 300-VW training frames under {self.annot_root}")
        self.video_of = {img: video for video, frames in self.wanted.items() for img in
                         (self.cache.path(video, k) for k in frames)}
        super().__init__(items=items, **kw)

    def prepare(self, progress: bool = True) -> int:
        """Decode every video's missing frames into the cache (once; the data module does it before training)."""
        from tqdm import tqdm

        todo = [v for v, frames in self.wanted.items() if self.cache.missing(v, frames)]
        return sum(self.cache.extract(v, self.wanted[v])
                   for v in tqdm(todo, desc="300-VW frames", unit="video", disable=not progress or not todo))

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path = self.items[i][0]
        if not img_path.is_file():  # not prepared (e.g. a data set built outside the data module)
            video = self.video_of[img_path]
            self.cache.extract(video, self.wanted[video])
        return super().load(i)


class DetectedClips(Dataset):
    """300-VW under the detector-box protocol: MTCNN runs on every annotated frame (detections cached per video
    under ``<cache_dir>/mtcnn/``); the face box of frame t is the detection overlapping the ground-truth landmark box
    most (IoU ≥ ``min_iou`` — it only says *which* face was annotated); a frame without one is a miss (NaN box) and
    the model crops it from its previous prediction, as ``infer`` does on a video. Items: ``video`` (path),
    ``numbers`` (1-based annotated frames kept), ``gt`` T×68×2, ``boxes`` T×4, ``detected`` T. The module decodes
    the video again, frame by frame (memory does not grow with the video)."""

    def __init__(self, root: str | Path, ids: list[str | int], cache_dir: str | Path = ".cache/facealign",
                 skip_frames: dict | None = None, mtcnn_dir: str | None = None, min_iou: float = 0.3,
                 max_frames: int | None = None, detector=None, **_) -> None:
        self.root, self.cache_dir = Path(root), Path(cache_dir)
        self.ids = [vw_id(v) for v in ids]
        for vid in self.ids:
            if not (self.root / vid / "vid.avi").is_file() or not (self.root / vid / "annot").is_dir():
                raise UserError(f"300-VW video {vid} not found: expected {self.root / vid}/vid.avi and annot/")
        self.skip = {vw_id(k): parse_frames(v, f"skip_frames[{k}]") for k, v in (skip_frames or {}).items()}
        self.mtcnn_dir, self.min_iou, self.max_frames, self.detector = mtcnn_dir, min_iou, max_frames, detector

    def __len__(self) -> int:
        return len(self.ids)

    def _detector(self):
        if self.detector is None:
            from shared.face.mtcnn import load_mtcnn

            mtcnn = load_mtcnn(self.mtcnn_dir, "detector-box test set: set data.mtcnn_dir or run `make assets`")
            self.detector = lambda image: mtcnn(image).boxes
        return self.detector

    def cache_tag(self) -> str | None:
        """What the cached detections depend on besides the video (None: an injected detector, never cached)."""
        if self.detector is not None:
            return getattr(self.detector, "cache_tag", None)
        return f"mtcnn|{Path(self.mtcnn_dir).resolve() if self.mtcnn_dir else 'assets'}"

    def detections(self, video: Path, numbers: list[int]) -> dict[int, np.ndarray]:
        """{frame: N×4 boxes} of the annotated frames, from the cache or by running the detector once."""
        from shared.io import atomic_write_bytes, iter_video

        tag = self.cache_tag()
        cache = self.cache_dir / "mtcnn" / f"{video.parent.name}-{file_key(video, tag)}.npz" if tag else None
        if cache is not None and cache.is_file():
            with np.load(cache) as z:
                got = {int(k): z["boxes"][a:b] for k, a, b in zip(z["frames"], z["start"][:-1], z["start"][1:])}
            if set(numbers) <= set(got):
                return got
        detect, want, got = self._detector(), set(numbers), {}
        for k, frame in enumerate(iter_video(video, max_frames=max(numbers)), start=1):
            if k in want:
                got[k] = np.asarray(detect(frame), np.float64).reshape(-1, 4)
        if cache is not None:
            frames = sorted(got)
            start = np.cumsum([0] + [len(got[k]) for k in frames])
            buf = io.BytesIO()
            np.savez(buf, frames=np.array(frames), start=start,
                     boxes=np.concatenate([got[k] for k in frames]) if frames else np.zeros((0, 4)))
            atomic_write_bytes(cache, buf.getvalue())
        return got

    def __getitem__(self, i: int) -> dict:
        vid = self.ids[i]
        video = self.root / vid / "vid.avi"
        annots = annotated_frames(self.root / vid / "annot", self.skip.get(vid))
        numbers = list(annots)[:self.max_frames] if self.max_frames else list(annots)
        if len(numbers) < 2:
            raise UserError(f"300-VW video {vid}: fewer than two annotated frames")
        gts = []
        for k in numbers:
            gt = read_pts(annots[k]).astype(np.float64)
            if gt.shape != (68, 2):
                raise UserError(f"{annots[k]}: expected 68 points, got {len(gt)}")
            gts.append(gt)
        found = self.detections(video, numbers)
        boxes = np.full((len(numbers), 4), np.nan)
        for t, (k, gt) in enumerate(zip(numbers, gts)):
            cand = found.get(k, np.zeros((0, 4)))
            if len(cand):
                iou = box_iou(cand, landmark_box(gt))
                if iou.max() >= self.min_iou:
                    boxes[t] = cand[int(iou.argmax())]
        return {"name": vid, "video": str(video), "numbers": torch.tensor(numbers),
                "gt": torch.from_numpy(np.stack(gts)).float(), "boxes": torch.from_numpy(boxes),
                "detected": torch.from_numpy(np.isfinite(boxes[:, 0]))}


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
    """Train on 300-W train minus the validation holdout (optionally + 300-VW training frames, raw or corrected, and
    with annotation noise / pseudo-video augmentation), validate on the held-out 300-W training images, test on
    named sets ``{name: {kind: 300w | 300w_detected | 300vw | 300vw_detected | pseudo, …}}``. Setup refuses a
    validation image that is (by path or content) in a test set, and training data that is a test set's."""

    def __init__(self, root: str, train_folders: list[str] | None = None, val_folders: list[str] | None = None,
                 val_holdout: int = 148, val_seed: int = 0, test_sets: dict[str, dict] | None = None,
                 size: int = 112, margin: float = 0.25, jitter_shift: float = 0.05, jitter_scale: float = 0.1,
                 flip: bool = True, noise_sigma: float = 0.0, noise_type: str = "gaussian", noise_prob: float = 0.0,
                 noise_spread: float = 0.2, poisson_lam: float = 4.0, pseudo_aug: float = 0.0,
                 aug_strength: float = 1.0, batch_size: int = 32, num_workers: int = 4, val_limit: int | None = None,
                 train_limit: int | None = None, vw_root: str | None = None, vw_train: dict | None = None,
                 skip_frames: dict | None = None, mtcnn_dir: str | None = None, min_iou: float = 0.3,
                 cache_dir: str = ".cache/facealign", categories: dict | None = None, real_root: str | None = None,
                 labels: str | None = None) -> None:
        # vw_root / skip_frames / mtcnn_dir / min_iou / cache_dir / categories are shared by the test_sets entries
        # (interpolated in the config), as are real_root / labels of data=real_video (dlib-labelled real video);
        # vw_train = {annot_root, ids, frames_per_video, frame_stride} adds 300-VW training frames
        super().__init__()
        if noise_type not in NOISE_TYPES:
            raise UserError(f"data.noise_type: unknown annotation noise {noise_type!r} ({' | '.join(NOISE_TYPES)})")
        self.save_hyperparameters()
        self.test_names: list[str] = []

    def _aug(self) -> dict:
        hp = self.hparams
        return dict(size=hp.size, margin=hp.margin, train=True, jitter_shift=hp.jitter_shift,
                    jitter_scale=hp.jitter_scale, flip=hp.flip, noise_sigma=hp.noise_sigma, noise_type=hp.noise_type,
                    noise_prob=hp.noise_prob, noise_spread=hp.noise_spread, poisson_lam=hp.poisson_lam,
                    pseudo_aug=hp.pseudo_aug, aug_strength=hp.aug_strength)

    def vw_frames(self) -> VWFrames | None:
        hp = self.hparams
        if not hp.vw_train:
            return None
        if not hp.vw_root:
            raise UserError("data.vw_train needs data.vw_root (the 300-VW videos)")
        spec = dict(hp.vw_train)
        unknown = sorted(set(spec) - {"annot_root", "ids", "frames_per_video", "frame_stride"})
        if unknown:
            raise UserError(f"data.vw_train: unknown key(s) {', '.join(unknown)} (annot_root, ids, frames_per_video, "
                            "frame_stride)")
        return VWFrames(hp.vw_root, skip_frames=hp.skip_frames, cache_dir=hp.cache_dir, **spec, **self._aug())

    def split(self) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
        """(300-W training pairs, validation pairs): ``val_holdout`` training images held out by the seeded rule of
        :func:`split_holdout`, or ``val_folders`` when given."""
        hp = self.hparams
        # train_folders: null = the 300-W training folders; [] = no still images (video frames only, data.vw_train)
        folders = W300_SPLITS["train"] if hp.train_folders is None else list(hp.train_folders)
        items = list_300w(hp.root, folders)
        if hp.val_folders:
            return items, list_300w(hp.root, list(hp.val_folders))
        return split_holdout(items, hp.val_holdout, hp.val_seed)

    def test_files(self) -> dict[str, list[Path]]:
        """Every configured test set's image / video files."""
        hp = self.hparams
        out = {}
        for name, spec in (hp.test_sets or {}).items():
            if spec is None:
                continue
            spec = dict(spec)
            kind = spec.get("kind", "300w")
            if kind in ("300vw", "300vw_detected"):
                root = Path(spec.get("root") or hp.vw_root)
                out[name] = [root / vw_id(v) / "vid.avi" for v in spec.get("ids", [])]
            else:
                out[name] = [img for img, _ in list_300w(spec.get("root") or hp.root, list(spec.get("folders", [])))]
        return out

    def check_disjoint(self, train: list[Path], val: list[Path]) -> None:
        """No validation image in a test set (path or content); no test file among the training data (path)."""
        check_disjoint(val, self.test_files(), train)

    def prepare_data(self) -> None:
        frames = self.vw_frames()
        if frames is not None:
            frames.prepare()

    def setup(self, stage: str | None = None) -> None:
        from torch.utils.data import ConcatDataset

        hp = self.hparams
        geo = dict(size=hp.size, margin=hp.margin)
        if stage in (None, "fit", "validate"):
            train_items, val_items = self.split()
            if not val_items:
                raise UserError("no validation images: set data.val_holdout ≥ 1 (held out of the training images) or "
                                "data.val_folders")
            if stage in (None, "fit"):
                still = FaceImages(items=train_items[:hp.train_limit], **self._aug())
                frames = self.vw_frames()
                self.train_set = still if frames is None else ConcatDataset([still, frames])
                videos = list(frames.wanted) if frames is not None else []
                self.check_disjoint([img for img, _ in train_items] + videos, [img for img, _ in val_items])
            self.val_set = FaceImages(items=val_items[:hp.val_limit], **geo)
        if stage in (None, "test"):
            cache = dict(cache_dir=hp.cache_dir)
            self.build_test_sets({"300w": lambda spec: FaceImages(**{**geo, "root": hp.root, **spec}),
                                  "300w_detected": lambda spec: DetectedFaces(**{"root": hp.root, **spec}),
                                  "300vw": lambda spec: VideoClips(**{**geo, **spec}),
                                  "300vw_detected": lambda spec: DetectedClips(**{**cache, **spec}),
                                  "pseudo": lambda spec: PseudoVideos(**{**geo, "root": hp.root, **spec})}, "300w")
