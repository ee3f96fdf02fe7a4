"""Page folders as a LightningDataModule: one scanned page (+ mask, + ground truth json when present) per batch.

Validation is never a test set: ``val_pages`` training pages are held out by a seeded permutation of the sorted
page list (:func:`holdout`, ``val_seed``) — the tree is fitted on the others — or ``val_dir`` names a folder of
its own. ``setup("fit")`` refuses a configuration whose validation pages are in a test set (same path or same
bytes). Testing alone (eval) needs neither the training pages nor the validation split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from projects.printdefect.page import MASK_SUFFIX, PAGE_EXTS, read_page
from shared.datamodule import EvenStepsDistributedSampler, UnpaddedDistributedSampler
from shared.errors import UserError


def list_pages(root: str | Path) -> list[Path]:
    """Page images under ``root`` (a file or a folder, recursive); mask files (``*_mask.png``) are not pages."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"path not found: {root}")
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in PAGE_EXTS
                  and not p.stem.endswith(MASK_SUFFIX))


def holdout(pages: list[Path], n: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """(kept, held out): ``n`` pages drawn by a seeded permutation of the sorted pages (the split depends only on
    the set of pages and the seed), both in sorted order."""
    ordered = sorted(pages)
    if n < 0 or (n > 0 and n >= len(ordered)):
        raise UserError(f"cannot hold out {n} of {len(ordered)} training pages for validation (data.val_pages): "
                        "leave at least one page to fit the tree on")
    pick = set(np.random.default_rng(seed).permutation(len(ordered))[:n].tolist())
    return [p for i, p in enumerate(ordered) if i not in pick], [p for i, p in enumerate(ordered) if i in pick]


def _digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_disjoint(val: list[Path], tests: dict[str, list[Path]]) -> None:
    """:class:`UserError` when a validation page is also in a test set (same resolved path, or same bytes)."""
    paths = {p.resolve(): p for p in val}
    sizes = {p.stat().st_size for p in val}
    digests = None
    for name, pages in tests.items():
        for t in pages:
            hit = paths.get(t.resolve())
            if hit is None and t.stat().st_size in sizes:   # only pages of the same size can have the same bytes
                digests = digests or {_digest(p): p for p in val}
                hit = digests.get(_digest(t))
            if hit is not None:
                raise UserError(f"validation page {hit} is also in test set {name} ({t}): validate on pages held "
                                "out of the training data, never on a test set")


class PageDataset(Dataset):
    """Pages of a folder; items are dicts (rgb uint8 H×W×3 tensor, mask bool H×W, dpi, path, defects, regions).
    An index past the last page is a DDP padding slot (see ``page_loader``) and gives ``{"pad": True}``."""

    def __init__(self, root: str | Path, dpi: float | None = None, require_labels: bool = True,
                 pages: list[Path] | None = None) -> None:
        self.root, self.dpi = Path(root), dpi
        self.pages = list_pages(root) if pages is None else list(pages)
        if not self.pages:
            raise UserError(f"no pages (png/tif) found under {root}")
        if require_labels:
            missing = [p for p in self.pages if not p.with_suffix(".json").is_file()]
            if missing:
                raise UserError(f"page without ground truth json: {missing[0]} (expected {missing[0].stem}.json)")

    def __len__(self) -> int:
        return len(self.pages)

    def __getitem__(self, i: int) -> dict:
        if i >= len(self.pages):
            return {"pad": True}
        path = self.pages[i]
        page = read_page(path, dpi=self.dpi)
        gt_file = path.with_suffix(".json")
        gt = json.loads(gt_file.read_text()) if gt_file.is_file() else {}
        return {"rgb": torch.from_numpy(page.rgb), "mask": torch.from_numpy(page.mask), "dpi": page.dpi,
                "path": str(path), "defects": gt.get("defects"), "regions": gt.get("regions", [])}


def _single(batch: list[dict]) -> dict:
    return batch[0]


def page_loader(ds: Dataset, num_workers: int = 0, even_steps: bool = False) -> DataLoader:
    """One page per batch, in order; under DDP each rank gets every W-th page exactly once. ``even_steps`` (training)
    pads the ranks to the same number of steps with ``{"pad": True}`` items (Lightning syncs every training step)."""
    sampler = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = EvenStepsDistributedSampler(ds) if even_steps else UnpaddedDistributedSampler(ds)
    return DataLoader(ds, batch_size=1, shuffle=False, sampler=sampler, num_workers=num_workers, collate_fn=_single,
                      persistent_workers=num_workers > 0)


class PageDataModule(pl.LightningDataModule):
    """``train_dir``: labelled pages the tree is fitted on, less ``val_pages`` of them held out for validation
    (seeded, ``val_seed``) unless ``val_dir`` is given; ``test_sets``: {name: folder} of labelled pages;
    ``predict_dir``: pages (labels optional) for ``trainer.predict`` — the Blockwise Dataset."""

    def __init__(self, train_dir: str | None = None, test_sets: dict[str, str] | None = None,
                 dpi: float | None = None, num_workers: int = 0, predict_dir: str | None = None,
                 val_pages: int = 0, val_seed: int = 0, val_dir: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.test_names: list[str] = []
        self.val_set: PageDataset | None = None

    def _test_folders(self) -> dict[str, str]:
        sets = {k: v for k, v in (self.hparams.test_sets or {}).items() if v}
        if not sets:
            raise UserError("evaluation needs data.test_sets.<name>=<folder of labelled pages>")
        return sets

    def split(self) -> tuple[list[Path], list[Path]]:
        """(training pages, validation pages) — the documented, seeded rule."""
        hp = self.hparams
        if not hp.train_dir:
            raise UserError("training needs data.train_dir=<folder of labelled pages>")
        pages = list_pages(hp.train_dir)
        if not pages:
            raise UserError(f"no pages (png/tif) found under {hp.train_dir}")
        if hp.val_dir:
            return pages, list_pages(hp.val_dir)
        return holdout(pages, int(hp.val_pages), int(hp.val_seed))

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in ("fit", None):
            train, val = self.split()
            self.train_set = PageDataset(hp.train_dir, hp.dpi, pages=train)
            if val:
                self.val_set = PageDataset(hp.val_dir or hp.train_dir, hp.dpi, pages=val)
                check_disjoint(val, {k: list_pages(v) for k, v in (hp.test_sets or {}).items() if v})
        if stage in ("test", None):
            sets = self._test_folders()
            self.test_names = list(sets)
            self.test_sets_ = [PageDataset(v, hp.dpi) for v in sets.values()]
        if stage == "predict":
            if not hp.predict_dir:
                raise UserError("predict needs data.predict_dir=<folder of pages>")
            self.predict_set = PageDataset(hp.predict_dir, hp.dpi, require_labels=False)

    def train_dataloader(self) -> DataLoader:
        return page_loader(self.train_set, self.hparams.num_workers, even_steps=True)

    def test_dataloader(self) -> list[DataLoader]:
        return [page_loader(ds, self.hparams.num_workers) for ds in self.test_sets_]

    def predict_dataloader(self) -> DataLoader:
        # built after the process group exists: under DDP every page goes to exactly one rank
        return page_loader(self.predict_set, self.hparams.num_workers)
