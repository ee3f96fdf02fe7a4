"""Single-image SR data: HR folders degraded on the fly (MATLAB bicubic ↓s, optional JPEG), fixed test sets,
and paired LR/HR folders for users' own data (Ch. 4 training and test protocol; also Ch. 5 baselines)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from shared.datamodule import SetsDataModule
from shared.degradations import jpeg
from shared.errors import UserError
from shared.imresize import imresize, modcrop
from shared.io import IMAGE_EXTS, image_to_tensor, list_files, read_image


def find_images(dirs: str | Sequence[str]) -> list[Path]:
    dirs = [dirs] if isinstance(dirs, str | Path) else list(dirs)
    files: list[Path] = []
    for d in dirs:
        if not Path(d).is_dir():
            raise UserError(f"image folder not found: {d}")
        files += list_files(d, IMAGE_EXTS)
    if not files:
        raise UserError(f"no images found in {', '.join(map(str, dirs))}")
    return files


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` then ``imwrite`` rounding → uint8 LR."""
    return imresize(hr, 1.0 / scale)


def dihedral_np(img: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations (k in 0..7) of an H×W×C array."""
    if k & 1:
        img = img[:, ::-1]
    if k & 2:
        img = img[::-1]
    if k & 4:
        img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)


class HRCropDataset(Dataset):
    """Random ``patch``-px HR crops → LR by MATLAB bicubic ×1/scale → JPEG at a random quality in
    ``jpeg_quality`` (None = no compression) → one of 8 dihedral variants. ``repeat`` lengthens an epoch."""

    def __init__(self, files: list[Path], scale: int, patch: int, jpeg_quality: Sequence[int] | None = None,
                 augment: bool = True, repeat: int = 1) -> None:
        if patch % scale:
            raise UserError(f"patch size {patch} must be a multiple of scale {scale}")
        self.files, self.scale, self.patch = files, scale, patch
        self.jpeg_quality = tuple(jpeg_quality) if jpeg_quality else None
        self.augment, self.repeat = augment, repeat

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def __getitem__(self, i: int) -> dict:
        path = self.files[i % len(self.files)]
        hr = read_image(path)
        h, w = hr.shape[:2]
        if h < self.patch or w < self.patch:
            raise UserError(f"image {path} ({w}×{h}) is smaller than the training patch {self.patch}")
        y = random.randrange(0, (h - self.patch) // self.scale + 1) * self.scale
        x = random.randrange(0, (w - self.patch) // self.scale + 1) * self.scale
        hr = hr[y : y + self.patch, x : x + self.patch]
        if self.augment:
            hr = dihedral_np(hr, random.randrange(8))
        clean = bicubic_lr(hr, self.scale)  # I^{LRHQ} of Eq. 4.6
        q = None
        lr = clean
        if self.jpeg_quality:
            q = random.randint(self.jpeg_quality[0], self.jpeg_quality[1])
            lr = jpeg(clean, q)
        return {"lr": image_to_tensor(lr), "hr": image_to_tensor(hr), "lr_clean": image_to_tensor(clean),
                "quality": q or 0}


class HRTestDataset(Dataset):
    """A test set of HR images: modcrop(scale) → bicubic LR → JPEG at a fixed ``quality`` (None: none)."""

    def __init__(self, files: list[Path], scale: int, quality: int | None = None, name: str = "test") -> None:
        self.files, self.scale, self.quality, self.name = files, scale, quality, name

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        hr = modcrop(read_image(self.files[i]), self.scale)
        lr = bicubic_lr(hr, self.scale)
        if self.quality:
            lr = jpeg(lr, self.quality)
        return {"lr": image_to_tensor(lr), "hr": image_to_tensor(hr), "name": self.files[i].stem}


class PairedFolderDataset(Dataset):
    """User data: an LR folder and an HR folder whose files match by stem; HR is modcropped to LR × scale."""

    def __init__(self, lr_dir: str, hr_dir: str, scale: int, name: str = "paired") -> None:
        lr_files = {p.stem: p for p in find_images(lr_dir)}
        hr_files = {p.stem: p for p in find_images(hr_dir)}
        missing = sorted(set(lr_files) - set(hr_files))
        if missing:
            raise UserError(f"{len(missing)} LR images have no HR partner in {hr_dir} (e.g. {missing[0]})")
        self.pairs = [(lr_files[k], hr_files[k]) for k in sorted(lr_files)]
        self.scale, self.name = scale, name

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        lr_p, hr_p = self.pairs[i]
        lr, hr = read_image(lr_p), read_image(hr_p)
        h, w = lr.shape[0] * self.scale, lr.shape[1] * self.scale
        if hr.shape[0] < h or hr.shape[1] < w:
            raise UserError(f"HR {hr_p} is smaller than LR {lr_p} × {self.scale}")
        return {"lr": image_to_tensor(lr), "hr": image_to_tensor(hr[:h, :w]), "name": lr_p.stem}


class SRDataModule(SetsDataModule):
    """Train on HR folders degraded on the fly; validate / test on named HR test sets × JPEG qualities.

    ``test_sets``: {name: folder}; ``test_qualities``: list of JPEG qualities (null = no JPEG); each (set, quality)
    pair is one test dataloader named ``<set>_q<quality>`` (``<set>`` when uncompressed).
    """

    def __init__(self, train_dirs: Sequence[str], val_sets: dict[str, str], test_sets: dict[str, str] | None = None,
                 scale: int = 4, patch: int = 128, train_jpeg_quality: Sequence[int] | None = (10, 100),
                 val_quality: int | None = 20, test_qualities: Sequence[int | None] = (10, 20, 40),
                 paired_test: dict[str, dict] | None = None, batch_size: int = 16, num_workers: int = 4,
                 repeat: int = 1, val_limit: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.test_names: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in (None, "fit"):
            self.train_set = HRCropDataset(find_images(list(hp.train_dirs)), hp.scale, hp.patch,
                                           hp.train_jpeg_quality, augment=True, repeat=hp.repeat)
        if stage in (None, "fit", "validate"):
            sets = []
            for name, d in hp.val_sets.items():
                files = find_images(d)[: hp.val_limit or None]
                sets.append(HRTestDataset(files, hp.scale, hp.val_quality, name))
            self.val_set = ConcatDataset(sets)
        if stage in (None, "test"):
            self.test_sets_, self.test_names = [], []
            for name, d in (hp.test_sets or {}).items():
                if d is None:  # `data.test_sets.<name>=null` drops a set
                    continue
                files = find_images(d)
                for q in hp.test_qualities:
                    self.test_sets_.append(HRTestDataset(files, hp.scale, q, name))
                    self.test_names.append(f"{name}_q{q}" if q else name)
            for name, spec in (hp.paired_test or {}).items():
                self.test_sets_.append(PairedFolderDataset(spec["lr"], spec["hr"], hp.scale, name))
                self.test_names.append(name)
            if not self.test_sets_:
                raise UserError("no test sets configured (data.test_sets / data.paired_test)")
