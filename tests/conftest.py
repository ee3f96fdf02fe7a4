from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """DATA_DIR with demo/{train,val}: real scikit-image photos (256 px crops)."""
    from shared.demo_data import write_demo_images

    root = tmp_path_factory.mktemp("data")
    write_demo_images(root / "demo", train=["astronaut", "chelsea", "coffee"], val=["camera", "brick"])
    return root
