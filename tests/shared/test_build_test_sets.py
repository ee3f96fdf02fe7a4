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
