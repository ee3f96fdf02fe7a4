"""The shared training loader: global batch → per-device batch, a data order that depends on (seed, epoch) alone,
per-sample seeded augmentation, and the mid-epoch skip a resumed run needs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from shared.datamodule import ResumableSampler, SeededDataset, per_device_batch
from shared.errors import UserError


@pytest.mark.parametrize("global_batch,world,expected", [(24, 1, 24), (24, 2, 12), (24, 8, 3), (256, 4, 64)])
def test_global_batch_is_split_over_the_processes(global_batch, world, expected):
    assert per_device_batch(global_batch, world) == expected


@pytest.mark.parametrize("global_batch,world,message", [(24, 5, "not divisible by the 5"), (24, 16, "not divisible"),
                                                        ("two", 1, "positive integer"), (0, 1, "positive integer")])
def test_a_global_batch_that_does_not_divide_is_a_user_error(global_batch, world, message):
    with pytest.raises(UserError, match=message):
        per_device_batch(global_batch, world)


def reference_order(n: int, seed: int, epoch: int, world: int, rank: int) -> list[int]:
    """By hand: a torch permutation seeded with seed + epoch, cut to a multiple of the world size, every world-th."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    perm = perm[: n - n % world]
    return perm[rank::world]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_order_depends_on_seed_and_epoch_only(world):
    data = list(range(23))
    for epoch in (0, 1, 5):
        shares = []
        for rank in range(world):
            s = ResumableSampler(data, seed=7, num_replicas=world, rank=rank)
            s.set_epoch(epoch)
            keys = list(s)
            assert {e for e, _ in keys} == {epoch}
            shares.append([i for _, i in keys])
            assert shares[-1] == reference_order(len(data), 7, epoch, world, rank)
        flat = [i for share in shares for i in share]
        assert len(flat) == len(set(flat)) == len(data) - len(data) % world  # disjoint shards


def test_resume_skips_the_samples_already_trained_once():
    s = ResumableSampler(list(range(10)), seed=0)
    s.set_epoch(3)
    full = list(s)
    s.resume(3, 4)
    s.set_epoch(3)
    assert list(s) == full[4:]
    assert list(s) == full  # only once
    s.resume(3, 4)
    s.set_epoch(4)  # another epoch: nothing skipped
    assert len(list(s)) == 10


class Draws(Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int):
        return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seeded_dataset_draws_depend_on_seed_epoch_and_index_only():
    ds = SeededDataset(Draws(), seed=3)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = random.random(), float(np.random.rand()), float(torch.rand(()))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    a = [ds[(0, i)] for i in range(5)]
    b = [ds[(0, i)] for i in reversed(range(5))][::-1]
    assert a == b  # order of loading does not matter
    assert len({x for item in a for x in item}) == 15  # every sample and generator draws differently
    assert ds[(1, 0)] != ds[(0, 0)] and SeededDataset(Draws(), seed=4)[(0, 0)] != ds[(0, 0)]
    # the main process's own generators are left as they were
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == before
