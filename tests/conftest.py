from __future__ import annotations

import os
import sys

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
    # … and Lightning's process-wide rank: a Trainer built in a simulated SLURM environment sets it to that rank
    # (5 of 8), after which every @rank_zero_only call of later tests in this worker (a CSV logger's save) is skipped
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod.rank_zero_only, "rank", 0) != 0:
            mod.rank_zero_only.rank = 0


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """DATA_DIR with demo/{train,val}: real scikit-image photos (256 px crops)."""
    from shared.demo_data import write_demo_images

    root = tmp_path_factory.mktemp("data")
    write_demo_images(root / "demo", train=["astronaut", "chelsea", "coffee"], val=["camera", "brick"])
    return root
