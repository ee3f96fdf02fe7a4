"""Run an entry point the way a user does: a fresh process, env paths, any working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(module: str, args: list[str], data: Path, logs: Path, cwd: Path,
            timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATA_DIR": str(data), "LOG_DIR": str(logs), "WANDB_MODE": "offline",
           "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
