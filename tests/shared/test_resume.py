"""Kill and resume: a training run killed with SIGKILL and resumed reproduces the uninterrupted run's loss and LR
curve bit for bit (CPU), keeps its earlier metrics rows, and never restarts from step 0 or piles up temp files."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import DIST_VARS, run_ok

pytestmark = pytest.mark.slow

# CAJNN's tiny smoke run: random crops, random JPEG qualities, shuffled order — every RNG a resume must restore
ARGS = ["+experiment=smoke", "callbacks.rich_progress_bar=null", "test_after_fit=false", "trainer.val_check_interval=6",
        "callbacks.model_checkpoint.every_n_train_steps=3", "callbacks.model_checkpoint.every_n_epochs=null"]
STEPS = 12


def curve(run_dir: Path) -> list[tuple[int, str, str]]:
    """(step, train/loss, lr) of every logged training step, as written (strings: bit-for-bit comparison)."""
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    loss = {int(r["step"]): r["train/loss"] for r in rows if r.get("train/loss")}
    lr = {int(r["step"]): r[k] for r in rows for k in r if k.startswith("lr") and r[k]}
    return [(s, loss[s], lr.get(s, "")) for s in sorted(loss)]


@pytest.fixture(scope="module")
def uninterrupted(demo_data, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    run_ok("projects.cajnn.train", [*ARGS, f"trainer.max_steps={STEPS}", f"hydra.run.dir={logs / 'full'}"],
           demo_data, logs)
    got = curve(logs / "full")
    assert [s for s, _, _ in got] == list(range(STEPS))
    return got


def test_sigkill_then_rerun_in_place_reproduces_the_uninterrupted_curve(uninterrupted, demo_data, tmp_path):
    """A real SIGKILL after the step-6 checkpoint; then the state a kill inside the ``last.ckpt`` write leaves
    (no last.ckpt, a half-written temp file beside the complete step checkpoint). The same command in the same
    folder (a requeued job) continues from the step checkpoint — not from step 0 — removes the temp file, keeps
    the rows logged before the kill, and reproduces the uninterrupted loss and LR curve bit for bit."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "DATA_DIR": str(demo_data), "LOG_DIR": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    for k in DIST_VARS:
        env.pop(k, None)
    # far more steps than we let it run: it is killed once its checkpoint of step 6 exists
    proc = subprocess.Popen([sys.executable, "-m", "projects.cajnn.train", *ARGS, "trainer.max_steps=100000",
                             f"hydra.run.dir={run_dir}"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = run_dir / "checkpoints"
    deadline = time.monotonic() + 240
    while not (ckpts / "step0000006.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and (ckpts / "step0000006.ckpt").exists()
    (ckpts / "last.ckpt").unlink(missing_ok=True)
    (ckpts / ".last.k1ll3d_x.ckpt").write_bytes(b"PK\x03\x04 half a zip")
    best = [p for p in ckpts.iterdir() if p.name.startswith("step")]
    res = run_ok("projects.cajnn.train", [*ARGS, f"trainer.max_steps={STEPS}", f"hydra.run.dir={run_dir}"],
                 demo_data, tmp_path)
    assert f"resuming this run directory's checkpoint {best[0]}" in res.stdout + res.stderr
    assert curve(run_dir) == uninterrupted  # rows before the kill kept, the rest retrained identically
    names = sorted(p.name for p in ckpts.iterdir())
    assert not [n for n in names if n.startswith(".") or "-v" in n], names  # no temp files, no -v1 copies
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == STEPS


def test_the_newest_complete_checkpoint_is_chosen(tmp_path):
    """``ckpt_path=last`` and in-place resume take the newest complete checkpoint of any kind, across runs: a step
    checkpoint written after an older run's last.ckpt wins; temp files of interrupted writes never count."""
    from shared.run import checkpoint_files, newest

    old, new = tmp_path / "a", tmp_path / "b"
    for d, names in ((old, ["last.ckpt", "step0000004.ckpt"]), (new, ["step0000008.ckpt", ".last.ab12cd34.ckpt"])):
        (d / "checkpoints").mkdir(parents=True)
        for n in names:
            (d / "checkpoints" / n).write_bytes(b"x")
    (new / "hpc_ckpt_1.ckpt").write_bytes(b"x")
    now = time.time()
    for i, p in enumerate([old / "checkpoints" / "step0000004.ckpt", old / "checkpoints" / "last.ckpt",
                           new / "hpc_ckpt_1.ckpt", new / "checkpoints" / "step0000008.ckpt",
                           new / "checkpoints" / ".last.ab12cd34.ckpt"]):
        os.utime(p, (now - 100 + i, now - 100 + i))
    assert sorted(p.name for p in checkpoint_files(new)) == ["hpc_ckpt_1.ckpt", "step0000008.ckpt"]
    assert newest([*checkpoint_files(old), *checkpoint_files(new)]) == new / "checkpoints" / "step0000008.ckpt"
    assert newest(checkpoint_files(old)) == old / "checkpoints" / "last.ckpt"
    assert newest([]) is None
