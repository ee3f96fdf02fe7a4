from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def restore_environment():
    """Each test leaves os.environ as it found it — Lightning writes some variables itself (a SLURM environment
    sets MASTER_ADDR to the first node), and a leaked one would point later DDP runs at a host that is not there."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """DATA_DIR with demo/{train,val}: real scikit-image photos (256 px crops)."""
    from shared.demo_data import write_demo_images

    root = tmp_path_factory.mktemp("data")
    write_demo_images(root / "demo", train=["astronaut", "chelsea", "coffee"], val=["camera", "brick"])
    return root
