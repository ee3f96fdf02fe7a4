"""HIME data (Sec. 5.5.1 "Datasets"): CelebAMask-HQ with CelebA identities, or the user's folder-per-identity
headshots; LR inputs by MATLAB bicubic ×1/s; n random other photos of the same identity as references; the flip
augmentations of Table 5.6.

CelebAMask-HQ (original download): ``<root>/CelebA-HQ-img/<i>.jpg`` (1024², i = 0…29999) and
``<root>/CelebA-HQ-to-CelebA-mapping.txt`` (header ``idx orig_idx orig_file``, rows ``0 119613 119614.jpg``).
Identities come from CelebA's ``identity_CelebA.txt`` (rows ``000001.jpg 2880``), joined on the CelebA file
number. Identities with fewer than ``min_images`` images are dropped; the rest are split, seeded and
identity-disjoint, into ``n_train_ids`` / ``n_eval_ids`` identities (2,600 / 287 in the paper) and ``n_val_ids``
validation identities held out of the training pool (30: the identities the paper's split leaves unused) — the
evaluation (test) identities are never validated on.

Folders: ``<root>/<identity>/*.jpg|png…`` (any size; centre-cropped square), split the same way, or a separate
``eval_root`` (and ``val_root``) with the same layout.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.datamodule import SetsDataModule
from shared.errors import UserError
from shared.imresize import imresize
from shared.io import IMAGE_EXTS, image_to_tensor, read_image, write_image
from shared.srdata import check_disjoint

Flip = Literal["none", "uneven", "even"]
FLIPS = ("none", "uneven", "even")
MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
IMAGE_DIR = "CelebA-HQ-img"


def _file_number(name: str) -> int:
    stem = Path(name).stem
    if not stem.isdigit():
        raise ValueError(stem)
    return int(stem)


def read_celeba_identities(path: str | Path) -> dict[int, int]:
    """CelebA ``identity_CelebA.txt`` → {CelebA file number: identity}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CelebA identity file not found: {path}")
    out = {}
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            out[_file_number(parts[0])] = int(parts[1])
        except (ValueError, IndexError):
            raise UserError(f"{path}:{ln}: expected '<file>.jpg <identity>', got {line!r}") from None
    return out


def read_hq_mapping(path: str | Path) -> dict[int, int]:
    """``CelebA-HQ-to-CelebA-mapping.txt`` → {CelebA-HQ index: CelebA file number} (from ``orig_file``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CelebA-HQ mapping file not found: {path}")
    out = {}
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] == "idx":
            continue
        try:
            out[int(parts[0])] = _file_number(parts[2])
        except (ValueError, IndexError):
            raise UserError(f"{path}:{ln}: expected 'idx orig_idx orig_file', got {line!r}") from None
    return out


def celeba_hq_identities(root: str | Path, identity_file: str | Path, mapping_file: str | Path | None = None,
                         min_images: int = 4) -> dict[int, list[Path]]:
    """{identity: sorted CelebA-HQ image paths} for identities with ≥ ``min_images`` images present on disk."""
    root = Path(root)
    img_dir = root / IMAGE_DIR
    if not img_dir.is_dir():
        raise UserError(f"CelebAMask-HQ root has no {IMAGE_DIR}/ folder: {root}")
    ids = read_celeba_identities(identity_file)
    mapping = read_hq_mapping(mapping_file or root / MAPPING_FILE)
    groups: dict[int, list[Path]] = {}
    for hq, orig in sorted(mapping.items()):
        if orig not in ids:
            raise UserError(f"CelebA file {orig:06d}.jpg (CelebA-HQ {hq}) has no identity in {identity_file}")
        path = img_dir / f"{hq}.jpg"
        if path.is_file():
            groups.setdefault(ids[orig], []).append(path)
    return {k: v for k, v in sorted(groups.items()) if len(v) >= min_images}


def folder_identities(root: str | Path, min_images: int = 4) -> dict[str, list[Path]]:
    """{identity folder name: sorted image paths} of ``<root>/<identity>/*`` with ≥ ``min_images`` images."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"identity folder root not found: {root}")
    groups = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
        if len(files) >= min_images:
            groups[d.name] = files
    return groups


def split_identities(ids: list, n_train: int, n_eval: int, seed: int = 0, n_val: int = 0) -> tuple[list, ...]:
    """Seeded identity-disjoint split: a permutation of the sorted ids, the first ``n_train`` for training, the next
    ``n_eval`` for evaluation (testing) and, when ``n_val`` > 0, the next ``n_val`` for validation (returned third);
    identities past those are unused."""
    ids = sorted(ids)
    if n_train + n_eval + n_val > len(ids):
        raise UserError(f"asked for {n_train} training + {n_eval} evaluation + {n_val} validation identities, but "
                        f"only {len(ids)} identities have enough images")
    order = np.random.default_rng(seed).permutation(len(ids))
    train = [ids[i] for i in order[:n_train]]
    evals = [ids[i] for i in order[n_train : n_train + n_eval]]
    if not n_val:
        return train, evals
    return train, evals, [ids[i] for i in order[n_train + n_eval : n_train + n_eval + n_val]]


def fit_image(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Centre-crop to the h:w aspect ratio and resize to h×w with MATLAB bicubic (uint8 in, uint8 out)."""
    ih, iw = img.shape[:2]
    if ih * w > iw * h:
        ch = max(1, round(iw * h / w))
        img = img[(ih - ch) // 2 : (ih - ch) // 2 + ch]
    elif ih * w < iw * h:
        cw = max(1, round(ih * w / h))
        img = img[:, (iw - cw) // 2 : (iw - cw) // 2 + cw]
    return img if img.shape[:2] == (h, w) else imresize(img, (h, w))


class HeadshotRefDataset(Dataset):
    """One item per image of the given identities: ``hr`` (the headshot at ``lr_size·scale``²), ``lr`` (MATLAB
    bicubic ×1/scale of it), ``refs`` (``num_refs`` other images of the same identity, HR size; random per call
    when ``train``, fixed per item otherwise), ``key``.

    ``flip`` (Table 5.6, training only): ``none``; ``uneven`` — with p = ½ one side, chosen at random, of the
    (input, references) pair is mirrored, never both (view mismatch); ``even`` — with p = ½ both are mirrored.
    References are drawn without replacement while the identity has enough other images, otherwise with.
    """

    def __init__(self, groups: list[list[Path]], scale: int = 4, lr_size: int = 32, num_refs: int = 3,
                 train: bool = True, flip: Flip = "none", seed: int = 0, limit: int | None = None,
                 cache_dir: str | Path | None = None) -> None:
        if flip not in FLIPS:
            raise ValueError(f"unknown flip augmentation {flip!r} ({' | '.join(FLIPS)})")
        if num_refs > 0 and any(len(g) < 2 for g in groups):
            raise UserError("every identity needs at least 2 images to draw references from")
        self.groups, self.scale, self.lr_size, self.num_refs = groups, scale, lr_size, num_refs
        self.train, self.flip, self.seed = train, flip, seed
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.items = [(g, j) for g, files in enumerate(groups) for j in range(len(files))]
        if limit:
            self.items = self.items[:limit]

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, path: Path) -> np.ndarray:
        """The headshot at HR size; with ``cache_dir`` resized once and kept as PNG (``<cache>/<size>/<folder>/``)."""
        hr = self.lr_size * self.scale
        if self.cache_dir is None:
            return fit_image(read_image(path), hr, hr)
        cached = self.cache_dir / str(hr) / path.parent.name / f"{path.stem}.png"
        if cached.is_file():
            return read_image(cached)
        img = fit_image(read_image(path), hr, hr)
        write_image(cached, img)  # atomic: concurrent workers never read half a file
        return img

    def pick_refs(self, g: int, j: int, rng) -> list[int]:
        """Indices of ``num_refs`` other images of identity ``g`` (``rng``: ``random`` or a ``random.Random``)."""
        others = [k for k in range(len(self.groups[g])) if k != j]
        if self.num_refs <= len(others):
            return rng.sample(others, self.num_refs)
        return [rng.choice(others) for _ in range(self.num_refs)]

    def __getitem__(self, i: int) -> dict:
        g, j = self.items[i]
        # training: the global generator (seeded per worker by Lightning's seed_everything); evaluation: per item
        rng = random if self.train else random.Random(self.seed * 1_000_003 + i)
        files = self.groups[g]
        hr = self._load(files[j])
        refs = [self._load(files[k]) for k in self.pick_refs(g, j, rng)]
        if self.train and self.flip != "none" and rng.random() < 0.5:
            flip_target, flip_refs = (True, True) if self.flip == "even" else \
                (True, False) if rng.random() < 0.5 else (False, True)
            hr = hr[:, ::-1] if flip_target else hr
            refs = [r[:, ::-1] for r in refs] if flip_refs else refs
        lr = imresize(np.ascontiguousarray(hr), 1 / self.scale)
        size = self.lr_size * self.scale
        ref_t = torch.stack([image_to_tensor(r) for r in refs]) if refs else torch.zeros(0, 3, size, size)
        return {"lr": image_to_tensor(lr), "hr": image_to_tensor(hr), "refs": ref_t, "key": str(files[j])}


class HIMEDataModule(SetsDataModule):
    """CelebAMask-HQ (``kind=celeba``) or folder-per-identity (``kind=folders``) headshots for HIME.

    Train on the training identities, validate on the first ``val_limit`` items of the validation identities
    (``n_val_ids`` held out of the training pool by the seeded split, or the identities under ``val_root``), test on
    all images of the evaluation identities (``test_limit`` caps it) as one test set named ``test_name`` (or,
    ``test_per_identity``, one test set per evaluation identity). Validation and test never share an image or an
    identity (checked at setup). ``eval_refs`` (default ``num_refs``) is the number of references at
    validation/test time. ``cache_dir`` keeps every photo resized to the HR size as PNG (CelebAMask-HQ's 1024²
    JPEGs are decoded and MATLAB-resized once instead of at every step).
    """

    def __init__(self, root: str, kind: Literal["celeba", "folders"] = "celeba", identity_file: str | None = None,
                 mapping_file: str | None = None, eval_root: str | None = None, scale: int = 4, lr_size: int = 32,
                 num_refs: int = 3, eval_refs: int | None = None, flip: Flip = "none", min_images: int = 4,
                 n_train_ids: int | None = 2600, n_eval_ids: int | None = 287, n_val_ids: int | None = 30,
                 val_root: str | None = None, split_seed: int = 0, batch_size: int = 16, num_workers: int = 4,
                 val_limit: int | None = 64, test_limit: int | None = None, test_name: str = "celeba",
                 test_per_identity: bool = False, cache_dir: str | None = None) -> None:
        super().__init__()
        if kind not in ("celeba", "folders"):
            raise UserError(f"unknown data kind {kind!r} (celeba | folders)")
        if flip not in FLIPS:
            raise UserError(f"unknown flip augmentation {flip!r} ({' | '.join(FLIPS)})")
        self.save_hyperparameters()
        self.test_names = [test_name]

    def identity_groups(self) -> tuple[dict, dict, dict]:
        """({identity: image paths} for training, the same for validation, the same for evaluation/testing)."""
        h = self.hparams
        if h.kind == "celeba":
            if not h.identity_file:
                raise UserError("CelebAMask-HQ needs data.identity_file (CelebA's identity_CelebA.txt)")
            groups = celeba_hq_identities(h.root, h.identity_file, h.mapping_file, h.min_images)
        else:
            groups = folder_identities(h.root, h.min_images)
        val_groups = folder_identities(h.val_root, h.min_images) if h.val_root else None
        n_val = 0 if val_groups is not None else (h.n_val_ids if h.n_val_ids is not None
                                                  else max(1, round(len(groups) * 0.05)))
        if h.kind == "folders" and h.eval_root:
            eval_groups = folder_identities(h.eval_root, h.min_images)
            n_train = h.n_train_ids if h.n_train_ids is not None else len(groups) - n_val
            train_ids, _, *val_ids = split_identities(list(groups), n_train, 0, h.split_seed, n_val)
        else:
            n_eval = h.n_eval_ids if h.n_eval_ids is not None else max(1, len(groups) // 10)
            n_train = h.n_train_ids if h.n_train_ids is not None else len(groups) - n_eval - n_val
            train_ids, eval_ids, *val_ids = split_identities(list(groups), n_train, n_eval, h.split_seed, n_val)
            eval_groups = {k: groups[k] for k in eval_ids}
        if val_groups is None:
            val_groups = {k: groups[k] for k in (val_ids[0] if val_ids else [])}
        return {k: groups[k] for k in train_ids}, val_groups, eval_groups

    def setup(self, stage: str | None = None) -> None:
        h = self.hparams
        train_ids, val_ids, eval_ids = self.identity_groups()
        train, vals, evals = list(train_ids.values()), list(val_ids.values()), list(eval_ids.values())
        if not evals:
            raise UserError(f"no evaluation identities with ≥ {h.min_images} images under {h.eval_root or h.root}")
        if not vals:
            raise UserError("no validation identities: set data.n_val_ids ≥ 1 (held out of the training identities) "
                            "or data.val_root")
        check_disjoint([p for g in vals for p in g], {h.test_name: [p for g in evals for p in g]}, by_content=False)
        if set(map(str, val_ids)) & set(map(str, eval_ids)):
            raise UserError(f"identity {sorted(set(map(str, val_ids)) & set(map(str, eval_ids)))[0]} is in both "
                            "the validation and the evaluation identities")
        n_eval = h.num_refs if h.eval_refs is None else h.eval_refs
        common = {"scale": h.scale, "lr_size": h.lr_size, "cache_dir": h.cache_dir}
        if stage in (None, "fit"):
            if not train:
                raise UserError(f"no training identities with ≥ {h.min_images} images under {h.root}")
            self.train_set = HeadshotRefDataset(train, num_refs=h.num_refs, train=True, flip=h.flip, **common)
        self.val_set = HeadshotRefDataset(vals, num_refs=n_eval, train=False, seed=h.split_seed,
                                          limit=h.val_limit, **common)
        test = {"seed": h.split_seed, "limit": h.test_limit, "num_refs": n_eval, "train": False, **common}
        if h.test_per_identity:
            self.test_names = [str(k) for k in eval_ids]
            self.test_sets_ = [HeadshotRefDataset([g], **test) for g in evals]
        else:
            self.test_sets_ = [HeadshotRefDataset(evals, **test)]
