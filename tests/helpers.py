"""Run an entry point the way a user does: a fresh process, env paths, any working directory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
             "LOCAL_WORLD_SIZE", "SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
             "SLURM_NNODES", "SLURM_NTASKS_PER_NODE", "SLURM_NODELIST", "SLURM_JOB_NAME")


def run_cli(module: str, args: list[str], data: Path, logs: Path, cwd: Path,
            timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATA_DIR": str(data), "LOG_DIR": str(logs), "WANDB_MODE": "offline",
           "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    for k in DIST_VARS:  # a run from a test is a fresh launch, never a rank of some other job
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_ok(module: str, args: list[str], data: Path, logs: Path, cwd: Path | None = None,
           timeout: int = 600) -> subprocess.CompletedProcess:
    """:func:`run_cli` that must exit 0 (the end of stderr is the failure message)."""
    res = run_cli(module, args, data, logs, cwd or logs, timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def run_dir_of(logs: Path, project: str, name: str) -> Path:
    """The single run folder ``<logs>/<project>/<name>/runs/<timestamp>``."""
    (run_dir,) = (Path(logs) / project / name / "runs").iterdir()
    return run_dir


def train_once(project: str, args: list[str], data: Path, logs: Path, name: str = "smoke") -> tuple[Path, Path]:
    """``python -m projects.<project>.train <args>`` in ``logs`` → (its run folder, ``logs``)."""
    run_ok(f"projects.{project}.train", args, data, logs)
    return run_dir_of(logs, project, name), logs


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` for the block, restored after. The tests' tiny networks run
    fastest on one thread; two threads on a shared 2-core machine can be 10–50× slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
