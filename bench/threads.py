"""Intra-op threads per process: the driver's automatic setting against torch's default, side by side.

Runs the same short CAJNN training (tiny network, demo photos; ``trainer=cpu`` and 2-process ``trainer=ddp_cpu``,
with 0 and 2 data-loader workers) as separate processes, alternating the two settings, and prints the median wall
time of each and the ratio default / auto:

* ``auto`` — what ``shared.run.set_threads`` chooses: the cores available to the process (affinity, cgroup quota,
  SLURM ``--cpus-per-task``) shared by the training processes of the node, minus the loader workers on CPU;
* ``torch default`` — ``OMP_NUM_THREADS`` set to what torch would take by itself (the affinity count), which is
  what every process used before: 2 DDP processes × that many threads, plus the workers, on the same cores.

    python bench/threads.py [--steps 60] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "projects.cajnn.train", *args], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr[-2000:])
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="bench_threads_"))
    subprocess.run([sys.executable, "-m", "shared.demo_data", str(tmp / "data" / "demo")], check=True,
                   capture_output=True)
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    base.update(DATA_DIR=str(tmp / "data"), LOG_DIR=str(tmp / "logs"), PYTHONWARNINGS="ignore")
    common = ["+experiment=smoke", "callbacks.rich_progress_bar=null", "callbacks.lr_monitor=null", "logger=none",
              "test_after_fit=false", f"trainer.max_steps={a.steps}", f"trainer.val_check_interval={a.steps}"]
    print(f"{cores} cores available; {a.steps} training steps; median of {a.repeat} runs (whole process, s)\n")
    print("| setting | auto threads | torch default | default / auto |")
    print("|---|---|---|---|")
    for label, extra in (("1 process, 0 workers", ["trainer=cpu", "data.num_workers=0"]),
                         ("1 process, 2 workers", ["trainer=cpu", "data.num_workers=2"]),
                         ("2 DDP processes, 0 workers", ["trainer=ddp_cpu", "data.num_workers=0"]),
                         ("2 DDP processes, 2 workers", ["trainer=ddp_cpu", "data.num_workers=2"])):
        auto, default = [], []
        for _ in range(a.repeat):  # alternate, so drift in the machine's speed hits both alike
            auto.append(run([*common, *extra], base))
            default.append(run([*common, *extra], {**base, "OMP_NUM_THREADS": str(cores)}))
        ma, md = statistics.median(auto), statistics.median(default)
        print(f"| {label} | {ma:.1f} | {md:.1f} | {md / ma:.2f} |")


if __name__ == "__main__":
    main()
