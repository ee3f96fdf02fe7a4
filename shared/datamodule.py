"""What every project's LightningDataModule shares: an exact distributed evaluation loader and the
train / val / test loaders over ``train_set``, ``val_set`` and the named ``test_sets_``."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from shared.errors import UserError

log = logging.getLogger(__name__)


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


class ResumableSampler(torch.utils.data.distributed.DistributedSampler):
    """Training sampler whose order depends only on (seed, epoch) — a seeded permutation, split over the DDP ranks
    like ``DistributedSampler`` (``drop_last``) — and that yields ``(epoch, index)`` keys for :class:`SeededDataset`.
    ``resume(epoch, done)`` skips the first ``done`` samples of this rank's share once, when that epoch starts
    again: a run resumed mid-epoch continues with exactly the samples the uninterrupted run would have drawn."""

    def __init__(self, dataset: Dataset, seed: int = 0, shuffle: bool = True, num_replicas: int = 1,
                 rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self._resume: tuple[int, int] | None = None

    def resume(self, epoch: int, done: int) -> None:
        self._resume = (epoch, done)

    def __iter__(self):
        indices = list(super().__iter__())
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None
        return iter([(self.epoch, i) for i in indices[skip:]])


class SeededDataset(Dataset):
    """A training dataset whose item ``(epoch, i)`` is drawn with Python's, NumPy's and torch's (CPU) global random
    generators seeded from (seed, epoch, i): a sample's augmentation depends on nothing else — not on the worker
    that loads it, not on what was loaded before — so a resumed run draws exactly what the uninterrupted one drew.
    Loading in the main process leaves its generators as they were."""

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (0, key)
        a, b = np.random.SeedSequence([self.seed, epoch, i]).generate_state(2)
        main = torch.utils.data.get_worker_info() is None
        if main:
            saved = random.getstate(), np.random.get_state(), torch.random.default_generator.get_state()
        random.seed(int(a))
        np.random.seed(int(b))
        torch.random.default_generator.manual_seed(int(a) << 32 | int(b))
        try:
            return self.dataset[i]
        finally:
            if main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.random.default_generator.set_state(saved[2])


def training_seed() -> int:
    """The run's seed (``seed_everything`` exports it as ``PL_GLOBAL_SEED``; the same on every rank), else 0."""
    value = os.environ.get("PL_GLOBAL_SEED", "")
    return int(value) if value.lstrip("-").isdigit() else 0


def per_device_batch(global_batch: int, world: int) -> int:
    """``data.batch_size`` is the global batch (the paper's): each of the ``world`` processes takes an equal
    share; a batch the world size does not divide is a user mistake."""
    if not isinstance(global_batch, int) or isinstance(global_batch, bool) or global_batch < 1:
        raise UserError(f"data.batch_size must be a positive integer, got {global_batch!r}")
    if global_batch % world:
        raise UserError(f"data.batch_size={global_batch} (the global batch) is not divisible by the "
                        f"{world} training processes; choose a multiple of {world}")
    return global_batch // world


def train_loader(datamodule: pl.LightningDataModule, dataset: Dataset, global_batch: int, num_workers: int,
                 what: str = "samples", **kwargs) -> DataLoader:
    """The training loader every project uses: the global batch split over the DDP ranks
    (:func:`per_device_batch`, both logged), a :class:`ResumableSampler` over a :class:`SeededDataset` (exact
    resume), its own seeded generator for worker seeds (the global generator is never drawn from)."""
    trainer = datamodule.trainer
    world = trainer.world_size if trainer is not None else 1
    rank = trainer.global_rank if trainer is not None else 0
    batch = per_device_batch(global_batch, world)
    if len(dataset) < global_batch:
        raise UserError(f"training set has {len(dataset)} {what}, fewer than batch_size={global_batch} "
                        "(the global batch)")
    if rank == 0:
        log.info("batch: %d global = %d per device × %d process(es)", global_batch, batch, world)
    seed = training_seed()
    sampler = ResumableSampler(dataset, seed=seed, num_replicas=world, rank=rank)
    return DataLoader(SeededDataset(dataset, seed), batch_size=batch, sampler=sampler, drop_last=True,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                      persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed), **kwargs)


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
    if dist and len(ds) < torch.distributed.get_world_size():
        raise UserError(f"an evaluation set of {len(ds)} sample(s) cannot be split over "
                        f"{torch.distributed.get_world_size()} processes (each needs at least one)")
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
        return train_loader(self, self.train_set, self.hparams.batch_size, self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_set, 1, self.hparams.num_workers)

    def test_dataloader(self) -> list[DataLoader]:
        return [eval_loader(ds, 1, self.hparams.num_workers) for ds in self.test_sets_]
