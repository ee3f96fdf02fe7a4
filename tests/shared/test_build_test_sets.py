"""SetsDataModule.build_test_sets: the test-set spec every project's data config uses."""

import pytest

from shared.datamodule import SetsDataModule
from shared.errors import UserError


class Sets(SetsDataModule):
    def __init__(self, test_sets):
        super().__init__()
        self.save_hyperparameters()


def test_build_test_sets_kinds_defaults_and_dropped_sets():
    dm = Sets({"a": {"root": "x"}, "b": {"kind": "other", "n": 2}, "gone": None})
    dm.build_test_sets({"plain": lambda spec: ("plain", spec), "other": lambda spec: ("other", spec)}, "plain")
    assert dm.test_names == ["a", "b"]
    assert dm.test_sets_ == [("plain", {"root": "x"}), ("other", {"n": 2})]


def test_build_test_sets_errors():
    with pytest.raises(UserError, match=r"test set b: unknown kind 'weird' \(plain \| other\)"):
        Sets({"b": {"kind": "weird"}}).build_test_sets({"plain": dict, "other": dict}, "plain")
    with pytest.raises(UserError, match="no test sets configured"):
        Sets({"gone": None}).build_test_sets({"plain": dict}, "plain")


@pytest.mark.parametrize("n,world", [(5, 2), (4, 2), (7, 3), (1, 2)])
def test_distributed_samplers_cover_each_sample_once(n, world):
    """Unpadded (evaluation): each index on exactly one rank. Even steps (training): equal lengths on every rank,
    the real indices once each and only padding slots (≥ n) beyond them."""
    from shared.datamodule import EvenStepsDistributedSampler, UnpaddedDistributedSampler

    data = list(range(n))
    unpadded = [list(_sampler(UnpaddedDistributedSampler, data, world, r)) for r in range(world)]
    assert sorted(i for part in unpadded for i in part) == data
    even = [list(_sampler(EvenStepsDistributedSampler, data, world, r)) for r in range(world)]
    assert len({len(part) for part in even}) == 1 and len(even[0]) == -(-n // world)
    flat = [i for part in even for i in part]
    assert sorted(i for i in flat if i < n) == data and len(flat) - n < world


def _sampler(cls, data, world, rank):
    from unittest import mock

    import torch.distributed as dist

    with mock.patch.object(dist, "is_available", return_value=True), \
            mock.patch.object(dist, "get_world_size", return_value=world), \
            mock.patch.object(dist, "get_rank", return_value=rank):
        return cls(data)
