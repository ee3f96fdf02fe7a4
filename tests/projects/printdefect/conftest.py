"""Small simulated 600-dpi pages shared by the print-defect tests."""

from __future__ import annotations

import pytest

from projects.printdefect.simulate import SimConfig, write_simulated_set

SMALL = dict(dpi=600.0, size=[1400, 1100], grid=[2, 2], margin_mm=5.0, barcode_mm=4.0, min_spacing_mm=4.0)


def small_config(**kw) -> SimConfig:
    return SimConfig(**{**SMALL, **kw})


@pytest.fixture(scope="session")
def pd_data(tmp_path_factory):
    """DATA_DIR with printdefect_demo/{train,test}: 7 + 2 simulated labelled pages (data=demo layout: 2 of the 7
    are held out for validation)."""
    root = tmp_path_factory.mktemp("pd_data")
    write_simulated_set(root / "printdefect_demo" / "train", 7, small_config(), seed=0)
    write_simulated_set(root / "printdefect_demo" / "test", 2, small_config(), seed=1)
    return root
