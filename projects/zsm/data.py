"""ZSM data: Vimeo-90K septuplets (training + Vimeo-T fast/medium/slow), Vid4-style clip folders with the official
window protocol, and the Lightning DataModule (Sec. 6.3.6, 6.4.1).

Vimeo-90K layout (original download): ``<root>/sequences/<5d>/<4d>/im1..im7.png`` with ``sep_trainlist.txt`` /
``sep_testlist.txt`` (and ``fast_testset.txt``/``medium_testset.txt``/``slow_testset.txt``) listing ``00001/0001``
keys. LR frames are made on the fly (MATLAB bicubic ×1/4 of the modcropped HR, rounded like ``imwrite``) or read
from a pre-made tree with the same layout (``lr_root``). Inputs are frames 1, 3, 5, 7; targets all 7.

Vid4-style clips: ``<root>/<clip>/*.png`` HR frames (optionally ``lr_root/<clip>/*.png`` LR frames, every frame).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.datamodule import SetsDataModule
from shared.degradations import jpeg
from shared.errors import UserError
from shared.imresize import imresize, modcrop
from shared.io import IMAGE_EXTS, read_image
from shared.srdata import dihedral_np, holdout_split

SCALE = 4


def read_keys(list_file: str | Path) -> list[str]:
    path = Path(list_file)
    if not path.is_file():
        raise UserError(f"Vimeo-90K list file not found: {path}")
    keys = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not keys:
        raise UserError(f"Vimeo-90K list file is empty: {path}")
    return keys


def degrade_lr(lr: np.ndarray, noise_sigma: float = 0.0, jpeg_quality: int | None = None,
               rng: np.random.Generator | None = None, salt_pepper: float = 0.0) -> np.ndarray:
    """Noisy-STVSR inputs of Sec. 6.4.3: Gaussian noise (σ on the 0-255 scale) plus a fraction ``salt_pepper`` of
    pixels set to 0 or 255 (the paper: 10 %, as in ToFlow), and/or JPEG at ``jpeg_quality``."""
    rng = rng or np.random.default_rng()
    if noise_sigma:
        lr = np.clip(lr.astype(np.float64) + rng.normal(0, noise_sigma, lr.shape), 0, 255).round().astype(np.uint8)
    if salt_pepper:
        u = rng.random(lr.shape[:2])
        lr = lr.copy()
        lr[u < salt_pepper / 2] = 0
        lr[(u >= salt_pepper / 2) & (u < salt_pepper)] = 255
    if jpeg_quality:
        lr = jpeg(lr, jpeg_quality)
    return lr


def _to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(frames))).permute(0, 3, 1, 2).float() / 255.0


class Vimeo90KSeptuplet(Dataset):
    """Vimeo-90K septuplets. ``train=True``: random ``patch``-px LR crop (×4 HR), the same flip/transpose on every
    frame (8 dihedral variants), random temporal reverse; otherwise whole frames.

    Items: ``lr`` 4×3×h×w (frames 1, 3, 5, 7), ``hr`` 7×3×4h×4w, ``lr_gt`` 7×3×h×w (all LR frames, for the GFI
    losses), ``key``. ``keys`` (instead of ``list_file``) gives the clip keys directly.
    """

    def __init__(self, root: str, list_file: str | None = None, lr_root: str | None = None, train: bool = True,
                 patch: int = 32, limit: int | None = None, noise_sigma: float = 0.0,
                 jpeg_quality: int | None = None, salt_pepper: float = 0.0, keys: list[str] | None = None) -> None:
        self.root = Path(root)
        if not (self.root / "sequences").is_dir():
            raise UserError(f"Vimeo-90K root has no sequences/ folder: {self.root}")
        if keys is None and list_file is None:
            raise ValueError("Vimeo90KSeptuplet needs list_file or keys")
        self.keys = (list(keys) if keys is not None else read_keys(list_file))[: limit or None]
        self.lr_root = Path(lr_root) if lr_root else None
        self.train, self.patch = train, patch
        self.noise_sigma, self.jpeg_quality, self.salt_pepper = noise_sigma, jpeg_quality, salt_pepper

    def __len__(self) -> int:
        return len(self.keys)

    def _frames(self, key: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        folder = self.root / "sequences" / key
        if not folder.is_dir():
            raise UserError(f"Vimeo-90K clip listed but missing: {folder}")
        hr = [modcrop(read_image(folder / f"im{i}.png"), SCALE) for i in range(1, 8)]
        if self.lr_root:
            lr = [read_image(self.lr_root / "sequences" / key / f"im{i}.png") for i in range(1, 8)]
            if lr[0].shape[0] * SCALE != hr[0].shape[0] or lr[0].shape[1] * SCALE != hr[0].shape[1]:
                raise UserError(f"LR frames of {key} are not HR/4 in size")
        else:
            lr = [imresize(f, 1 / SCALE) for f in hr]
        return hr, lr

    def __getitem__(self, i: int) -> dict:
        key = self.keys[i]
        hr, lr = self._frames(key)
        if self.train:
            h, w = lr[0].shape[:2]
            if h < self.patch or w < self.patch:
                raise UserError(f"clip {key}: LR frames {w}×{h} smaller than the patch {self.patch}")
            y, x = random.randrange(h - self.patch + 1), random.randrange(w - self.patch + 1)
            p, s = self.patch, SCALE
            lr = [f[y : y + p, x : x + p] for f in lr]
            hr = [f[y * s : (y + p) * s, x * s : (x + p) * s] for f in hr]
            k = random.randrange(8)
            lr, hr = [dihedral_np(f, k) for f in lr], [dihedral_np(f, k) for f in hr]
            if random.random() < 0.5:
                lr, hr = lr[::-1], hr[::-1]
        inputs = [lr[j] for j in (0, 2, 4, 6)]
        if self.noise_sigma or self.jpeg_quality or self.salt_pepper:
            # training: drawn from the global generator, which the training loader seeds per sample (exact resume)
            rng = np.random.default_rng(random.getrandbits(63) if self.train else i)
            inputs = [degrade_lr(f, self.noise_sigma, self.jpeg_quality, rng, self.salt_pepper) for f in inputs]
        return {"lr": _to_tensor(inputs), "hr": _to_tensor(hr), "lr_gt": _to_tensor(lr), "key": key,
                "clip": 0, "score": torch.ones(7, dtype=torch.bool)}


def _frame_sort_key(p: Path) -> tuple[int, str]:
    m = re.search(r"\d+", p.stem)
    return (int(m.group()) if m else -1, p.name)


def skip_windows(n_frames: int, protocol: str = "paper") -> list[tuple[list[int], list[bool]]]:
    """Official test windows for a full-frame-rate clip of ``n_frames`` HR frames (Sec. 2/3 of the ZSM notes).

    Each window covers 7 consecutive frames; its 1st/3rd/5th/7th frames are the inputs; windows advance by 6 and
    a frame is scored by the first window that produces it. ``protocol``:
    ``paper`` — an even-length clip drops its last frame and a final window is aligned to the (new) last frame,
    so inputs stay on even indices (170 of Vid4's 171 frames); ``all`` — the final window is always the last 7
    frames (all 171 frames scored).
    """
    if n_frames < 7:
        raise UserError(f"a clip needs at least 7 frames for the 4-in/7-out protocol, got {n_frames}")
    if protocol not in ("paper", "all"):
        raise ValueError(f"unknown window protocol {protocol!r} (paper | all)")
    length = n_frames - 1 if protocol == "paper" and n_frames % 2 == 0 else n_frames
    starts = list(range(0, length - 6, 6))
    if starts[-1] + 6 != length - 1:
        starts.append(length - 7)
    seen: set[int] = set()
    windows = []
    for s in starts:
        idx = list(range(s, s + 7))
        score = [j not in seen for j in idx]
        seen.update(idx)
        windows.append((idx, score))
    return windows


class ClipFolderDataset(Dataset):
    """Vid4-style test clips: every window of :func:`skip_windows` is one item (LR made on the fly unless
    ``lr_root`` holds every LR frame). Items carry ``clip`` (index into ``clips``) and ``score`` (which of the 7
    outputs count), so metrics can be averaged per clip and then over clips, as the paper does."""

    def __init__(self, root: str, lr_root: str | None = None, clips: list[str] | None = None,
                 protocol: str = "paper", noise_sigma: float = 0.0, jpeg_quality: int | None = None,
                 salt_pepper: float = 0.0) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"clip folder not found: {self.root}")
        self.clips = clips or sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.clips:
            raise UserError(f"no clip sub-folders in {self.root}")
        self.lr_root = Path(lr_root) if lr_root else None
        self.noise_sigma, self.jpeg_quality, self.salt_pepper = noise_sigma, jpeg_quality, salt_pepper
        self.items = []
        self.frames: dict[str, list[Path]] = {}
        for ci, clip in enumerate(self.clips):
            files = sorted((p for p in (self.root / clip).iterdir() if p.suffix.lower() in IMAGE_EXTS),
                           key=_frame_sort_key) if (self.root / clip).is_dir() else []
            if not files:
                raise UserError(f"no frames in {self.root / clip}")
            self.frames[clip] = files
            self.items += [(ci, idx, score) for idx, score in skip_windows(len(files), protocol)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        ci, idx, score = self.items[i]
        clip = self.clips[ci]
        hr = [modcrop(read_image(self.frames[clip][j]), SCALE) for j in idx]
        if self.lr_root:
            lr_files = sorted((p for p in (self.lr_root / clip).iterdir() if p.suffix.lower() in IMAGE_EXTS),
                              key=_frame_sort_key)
            lr = [read_image(lr_files[j]) for j in idx]
        else:
            lr = [imresize(f, 1 / SCALE) for f in hr]
        rng = np.random.default_rng(i)
        inputs = [degrade_lr(lr[j], self.noise_sigma, self.jpeg_quality, rng, self.salt_pepper) for j in (0, 2, 4, 6)]
        return {"lr": _to_tensor(inputs), "hr": _to_tensor(hr), "lr_gt": _to_tensor(lr), "key": f"{clip}/{idx[0]}",
                "clip": ci, "score": torch.tensor(score)}


class ZSMDataModule(SetsDataModule):
    """Train on Vimeo-90K septuplets minus ``val_count`` clips of the training list, held out for validation by a
    seeded permutation (``shared.srdata.holdout_split``: the split depends only on the list and ``val_seed``); test on
    any number of named sets. No validation clip is ever a test clip: setup refuses overlapping folders.

    ``test_sets``: {name: {kind: vimeo | clips, …dataset kwargs}} — e.g. Vid4 (clips) and Vimeo-Fast/Medium/Slow.
    """

    def __init__(self, vimeo_root: str, train_list: str, lr_root: str | None = None,
                 test_sets: dict[str, dict] | None = None, patch: int = 32, batch_size: int = 24,
                 num_workers: int = 4, val_count: int = 64, val_seed: int = 0, noise_sigma: float = 0.0,
                 jpeg_quality: int | None = None, salt_pepper: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.test_names: list[str] = []

    def split_keys(self) -> tuple[list[str], list[str]]:
        """(training keys, validation keys) of the training list."""
        hp = self.hparams
        return holdout_split(read_keys(hp.train_list), hp.val_count, hp.val_seed)

    def test_folders(self) -> dict[str, set[Path]]:
        """{test set name: the resolved clip folders it reads} (Vimeo keys → sequences/<key>, clips → <root>/<clip>)."""
        out = {}
        for name, spec in (self.hparams.test_sets or {}).items():
            if spec is None:
                continue
            if spec.get("kind", "clips") == "vimeo":
                root = Path(spec["root"]) / "sequences"
                out[name] = {(root / k).resolve() for k in read_keys(spec["list_file"])}
            else:
                root = Path(spec["root"])
                clips = spec.get("clips") or (sorted(p.name for p in root.iterdir() if p.is_dir())
                                              if root.is_dir() else [])
                out[name] = {(root / c).resolve() for c in clips}
        return out

    def check_val_not_tested(self, val_keys: list[str]) -> None:
        val = {(Path(self.hparams.vimeo_root) / "sequences" / k).resolve() for k in val_keys}
        for name, folders in self.test_folders().items():
            both = val & folders
            if both:
                raise UserError(f"validation clip {sorted(both)[0]} is also in test set {name}: validate on held-out "
                                "training clips, never on a test set")

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        common = dict(noise_sigma=hp.noise_sigma, jpeg_quality=hp.jpeg_quality, salt_pepper=hp.salt_pepper)
        if stage in (None, "fit", "validate"):  # testing alone needs neither the training list nor the split
            train_keys, val_keys = self.split_keys()
            if not val_keys:
                raise UserError("no validation clips: data.val_count must be ≥ 1")
            self.check_val_not_tested(val_keys)
        if stage in (None, "fit"):
            self.train_set = Vimeo90KSeptuplet(hp.vimeo_root, lr_root=hp.lr_root, train=True, patch=hp.patch,
                                               keys=train_keys, **common)
        if stage in (None, "fit", "validate"):
            self.val_set = Vimeo90KSeptuplet(hp.vimeo_root, lr_root=hp.lr_root, train=False, keys=val_keys, **common)
        if stage in (None, "test"):
            self.build_test_sets({"vimeo": lambda spec: Vimeo90KSeptuplet(train=False, **{**common, **spec}),
                                  "clips": lambda spec: ClipFolderDataset(**{**common, **spec})}, "clips")
