"""What every project's LightningDataModule shares: an exact distributed evaluation loader and the
train / val / test loaders over ``train_set``, ``val_set`` and the named ``test_sets_``."""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from shared.errors import UserError


class UnpaddedDistributedSampler(torch.utils.data.distributed.DistributedSampler):
    """Evaluation sampler for DDP that gives rank r the indices r, r+W, r+2W, … — every sample exactly once
    (Lightning's default pads ranks to equal length, which double-counts samples in test metrics)."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset, shuffle=False, drop_last=False)
        self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class EvenStepsDistributedSampler(torch.utils.data.distributed.DistributedSampler):
    """Training sampler for DDP when every sample must be used exactly once: rank r gets r, r+W, r+2W, … up to
    ``ceil(N/W)·W`` so all ranks take the same number of steps (Lightning broadcasts at every training step; uneven
    ranks deadlock). Indices ≥ N are padding slots: the dataset must answer them with an item the step skips."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset, shuffle=False, drop_last=False)
        self.num_samples = -(-len(dataset) // self.num_replicas)

    def __iter__(self):
        return iter(range(self.rank, self.num_samples * self.num_replicas, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def all_ranks(obj) -> list:
    """Every DDP rank's ``obj`` in rank order (picklable objects; ``[obj]`` without torch.distributed) — the
    collective must be reached by all ranks."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def eval_loader(ds: Dataset, batch_size: int = 1, num_workers: int = 0) -> DataLoader:
    """A deterministic evaluation loader; under DDP each sample is seen by exactly one rank."""
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    sampler = UnpaddedDistributedSampler(ds) if dist else None
    return DataLoader(ds, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)


def test_set_names(trainer: pl.Trainer) -> list[str]:
    """Names of the current test dataloaders: the datamodule's ``test_names`` when they match in number, else
    ``set0``, ``set1``, …"""
    names = list(getattr(trainer.datamodule, "test_names", []) or [])
    loaders = trainer.test_dataloaders
    n = len(loaders) if isinstance(loaders, list) else 1
    return names if len(names) == n else [f"set{i}" for i in range(n)]


class SetsDataModule(pl.LightningDataModule):
    """Base for data modules whose ``setup`` fills ``train_set``, ``val_set``, ``test_sets_`` and ``test_names``;
    needs ``batch_size`` and ``num_workers`` hyper-parameters. Evaluation runs one sample per batch."""

    test_names: list[str]

    def build_test_sets(self, kinds: dict[str, Callable[[dict], Dataset]], default_kind: str) -> None:
        """Fill ``test_sets_``/``test_names`` from ``hparams.test_sets`` = {name: {kind: …, **args} | None}: each
        set's ``kind`` (default ``default_kind``) picks the builder that makes its dataset from the other args; a
        None entry (``data.test_sets.<name>=null``) drops that set. Unknown kind / no set left → UserError."""
        self.test_sets_, self.test_names = [], []
        for name, spec in (self.hparams.test_sets or {}).items():
            if spec is None:
                continue
            spec = dict(spec)
            kind = spec.pop("kind", default_kind)
            if kind not in kinds:
                raise UserError(f"test set {name}: unknown kind {kind!r} ({' | '.join(kinds)})")
            self.test_sets_.append(kinds[kind](spec))
            self.test_names.append(name)
        if not self.test_sets_:
            raise UserError("no test sets configured (data.test_sets)")

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        if len(self.train_set) // world < self.hparams.batch_size:
            raise UserError(f"training set has {len(self.train_set)} samples, fewer than "
                            f"batch_size={self.hparams.batch_size} × {world} process(es)")
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.hparams.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_set, 1, self.hparams.num_workers)

    def test_dataloader(self) -> list[DataLoader]:
        return [eval_loader(ds, 1, self.hparams.num_workers) for ds in self.test_sets_]
