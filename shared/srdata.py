"""Single-image SR data: HR folders degraded on the fly (MATLAB bicubic ↓s, optional JPEG), fixed test sets,
and paired LR/HR folders for users' own data (Ch. 4 training and test protocol; also Ch. 5 baselines).

Training pairs follow Sec. 4.4.1 in its order: the *whole* HR image is downsampled ×1/s (MATLAB bicubic) and
JPEG-compressed, and only then are the LR patch and the matching HR patch cropped — so the 8×8 JPEG grid falls
anywhere in a patch, as it does in a test image. The clean LR of each training image is made once and kept as PNG
in ``lr_cache_dir``; the JPEG (a new random quality per sample) is applied to the whole LR image at every step.

Validation is never a test set: it is either folders the chapter never tests on (DIV2K's official validation
images) or ``val_holdout`` training images carved out by a seeded rule (:func:`holdout_split`) and removed from
training; :func:`check_disjoint` refuses a configuration whose validation and test images overlap.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from shared.datamodule import SetsDataModule
from shared.degradations import jpeg
from shared.errors import UserError
from shared.imresize import imresize, modcrop
from shared.io import IMAGE_EXTS, image_to_tensor, list_files, read_image, write_image


def holdout_split(items: Sequence, n: int, seed: int = 0) -> tuple[list, list]:
    """(kept, held out): ``n`` items drawn by a seeded permutation of the *sorted* items (so the split depends only
    on the set of items and the seed, not on listing order), both returned in sorted order."""
    ordered = sorted(items)
    if n < 0 or (n > 0 and n >= len(ordered)):
        raise UserError(f"cannot hold out {n} of {len(ordered)} items for validation (leave at least one to train)")
    pick = set(np.random.default_rng(seed).permutation(len(ordered))[:n].tolist())
    return ([x for i, x in enumerate(ordered) if i not in pick], [x for i, x in enumerate(ordered) if i in pick])


def file_digest(path: str | Path) -> str:
    """SHA-1 of a file's bytes (identifies the same image under another name or folder)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_disjoint(val: Iterable[str | Path], tests: dict[str, Iterable[str | Path]], by_content: bool = True) -> None:
    """Raise :class:`UserError` when a validation file is also in a test set — the same resolved path or (with
    ``by_content``) the same bytes. A test set is never validated on."""
    val = [Path(p) for p in val]
    val_paths = {p.resolve() for p in val}
    val_digests = {file_digest(p): p for p in val} if by_content else {}
    for name, files in tests.items():
        for f in files:
            f = Path(f)
            if f.resolve() in val_paths:
                raise UserError(f"validation image {f} is also in test set {name}: validate on held-out training "
                                "data, never on a test set")
            if by_content:
                d = file_digest(f)
                if d in val_digests:
                    raise UserError(f"validation image {val_digests[d]} has the same content as {f} of test set "
                                    f"{name}: validate on held-out training data, never on a test set")


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
    """Training pairs of Sec. 4.4.1: the whole HR image (modcropped to ``scale``) → MATLAB bicubic ×1/scale (the
    clean LR, made once per image and kept in ``lr_cache_dir`` when given) → JPEG of the *whole* LR image at a random
    quality in ``jpeg_quality`` (None = no compression) → a random ``patch/scale``-px LR crop and the matching
    ``patch``-px HR crop → one of 8 dihedral variants applied to all three. ``repeat`` lengthens an epoch.

    Items: ``lr`` (JPEG LR patch), ``hr``, ``lr_clean`` (I^{LRHQ} of Eq. 4.6, same crop), ``quality``.
    """

    def __init__(self, files: list[Path], scale: int, patch: int, jpeg_quality: Sequence[int] | None = None,
                 augment: bool = True, repeat: int = 1, lr_cache_dir: str | Path | None = None) -> None:
        if patch % scale:
            raise UserError(f"patch size {patch} must be a multiple of scale {scale}")
        self.files, self.scale, self.patch = files, scale, patch
        self.jpeg_quality = tuple(jpeg_quality) if jpeg_quality else None
        self.augment, self.repeat = augment, repeat
        self.lr_cache_dir = Path(lr_cache_dir) if lr_cache_dir else None

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def _cache_path(self, path: Path) -> Path:
        folder = path.resolve().parent
        tag = hashlib.sha1(str(folder).encode()).hexdigest()[:10]
        return self.lr_cache_dir / f"x{self.scale}" / f"{folder.name}_{tag}" / f"{path.stem}.png"

    def clean_lr(self, path: Path, hr: np.ndarray) -> np.ndarray:
        """MATLAB bicubic ×1/scale of the whole (modcropped) ``hr``, from the cache when present."""
        if self.lr_cache_dir is None:
            return bicubic_lr(hr, self.scale)
        cached = self._cache_path(path)
        want = (hr.shape[0] // self.scale, hr.shape[1] // self.scale)
        if cached.is_file():
            lr = read_image(cached)
            if lr.shape[:2] == want:
                return lr
        lr = bicubic_lr(hr, self.scale)
        write_image(cached, lr)  # atomic: concurrent workers never read half a file
        return lr

    def __getitem__(self, i: int) -> dict:
        path = self.files[i % len(self.files)]
        hr = modcrop(read_image(path), self.scale, path)
        h, w = hr.shape[:2]
        if h < self.patch or w < self.patch:
            raise UserError(f"image {path} ({w}×{h}) is smaller than the training patch {self.patch}")
        clean = self.clean_lr(path, hr)  # I^{LRHQ} of Eq. 4.6, whole image
        q = None
        lr = clean
        if self.jpeg_quality:
            q = random.randint(self.jpeg_quality[0], self.jpeg_quality[1])
            lr = jpeg(clean, q)  # the whole LR image: its 8×8 grid is the test images' grid, not the patch's
        p, s = self.patch // self.scale, self.scale
        y = random.randrange(0, clean.shape[0] - p + 1)
        x = random.randrange(0, clean.shape[1] - p + 1)
        lr, clean = lr[y : y + p, x : x + p], clean[y : y + p, x : x + p]
        hr = hr[y * s : (y + p) * s, x * s : (x + p) * s]
        if self.augment:
            k = random.randrange(8)
            lr, clean, hr = dihedral_np(lr, k), dihedral_np(clean, k), dihedral_np(hr, k)
        return {"lr": image_to_tensor(lr), "hr": image_to_tensor(hr), "lr_clean": image_to_tensor(clean),
                "quality": q or 0}


class HRTestDataset(Dataset):
    """A test set of HR images: modcrop(scale) → bicubic LR → JPEG at a fixed ``quality`` (None: none)."""

    def __init__(self, files: list[Path], scale: int, quality: int | None = None, name: str = "test") -> None:
        self.files, self.scale, self.quality, self.name = files, scale, quality, name

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        hr = modcrop(read_image(self.files[i]), self.scale, self.files[i])
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

    Validation (at ``val_quality``): the folders of ``val_sets`` (each capped at ``val_limit`` images in sorted
    order) plus ``val_holdout`` training images carved out by :func:`holdout_split` with ``val_seed`` (removed from
    training). Setup refuses any overlap between validation and test images (path or content).
    """

    def __init__(self, train_dirs: Sequence[str], val_sets: dict[str, str] | None = None,
                 test_sets: dict[str, str] | None = None, scale: int = 4, patch: int = 128,
                 train_jpeg_quality: Sequence[int] | None = (10, 100), val_quality: int | None = 20,
                 test_qualities: Sequence[int | None] = (10, 20, 40), paired_test: dict[str, dict] | None = None,
                 batch_size: int = 16, num_workers: int = 4, repeat: int = 1, val_limit: int | None = None,
                 val_holdout: int = 0, val_seed: int = 0, lr_cache_dir: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.test_names: list[str] = []

    def split_files(self) -> tuple[list[Path], list[Path]]:
        """(training files, validation files): ``val_sets`` folders (``val_limit`` each) + the seeded holdout."""
        hp = self.hparams
        train, held = holdout_split(find_images(list(hp.train_dirs)), hp.val_holdout, hp.val_seed)
        val = list(held)
        for d in (hp.val_sets or {}).values():
            if d is not None:
                val += find_images(d)[: hp.val_limit or None]
        if not val:
            raise UserError("no validation images: set data.val_sets and/or data.val_holdout")
        return train, val

    def test_files(self) -> dict[str, list[Path]]:
        """{test set name: HR files} of every configured test set (paired sets: their HR files)."""
        hp = self.hparams
        out = {name: find_images(d) for name, d in (hp.test_sets or {}).items() if d is not None}
        for name, spec in (hp.paired_test or {}).items():
            out[name] = find_images(spec["hr"])
        return out

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in (None, "fit", "validate"):  # testing alone needs neither the training data nor the split
            train, val = self.split_files()
            check_disjoint(val, self.test_files())
        if stage in (None, "fit"):
            self.train_set = HRCropDataset(train, hp.scale, hp.patch, hp.train_jpeg_quality, augment=True,
                                           repeat=hp.repeat, lr_cache_dir=hp.lr_cache_dir)
        if stage in (None, "fit", "validate"):
            self.val_set = HRTestDataset(val, hp.scale, hp.val_quality, "val")
        if stage in (None, "test"):
            self.test_sets_, self.test_names = [], []
            for name, files in self.test_files().items():
                if name in (hp.paired_test or {}):
                    continue
                for q in hp.test_qualities:
                    self.test_sets_.append(HRTestDataset(files, hp.scale, q, name))
                    self.test_names.append(f"{name}_q{q}" if q else name)
            for name, spec in (hp.paired_test or {}).items():
                self.test_sets_.append(PairedFolderDataset(spec["lr"], spec["hr"], hp.scale, name))
                self.test_names.append(name)
            if not self.test_sets_:
                raise UserError("no test sets configured (data.test_sets / data.paired_test)")
