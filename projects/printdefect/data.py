"""Page folders as a LightningDataModule: one scanned page (+ mask, + ground truth json when present) per batch."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
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


class PageDataset(Dataset):
    """Pages of a folder; items are dicts (rgb uint8 H×W×3 tensor, mask bool H×W, dpi, path, defects, regions).
    An index past the last page is a DDP padding slot (see ``page_loader``) and gives ``{"pad": True}``."""

    def __init__(self, root: str | Path, dpi: float | None = None, require_labels: bool = True) -> None:
        self.root, self.dpi = Path(root), dpi
        self.pages = list_pages(root)
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
    """``train_dir``: labelled pages the tree is fitted on; ``test_sets``: {name: folder} of labelled pages;
    ``predict_dir``: pages (labels optional) for ``trainer.predict`` — the Blockwise Dataset."""

    def __init__(self, train_dir: str | None = None, test_sets: dict[str, str] | None = None,
                 dpi: float | None = None, num_workers: int = 0, predict_dir: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.test_names: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in ("fit", None):
            if not hp.train_dir:
                raise UserError("training needs data.train_dir=<folder of labelled pages>")
            self.train_set = PageDataset(hp.train_dir, hp.dpi)
        if stage in ("test", None):
            sets = {k: v for k, v in (hp.test_sets or {}).items() if v}
            if not sets:
                raise UserError("evaluation needs data.test_sets.<name>=<folder of labelled pages>")
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
