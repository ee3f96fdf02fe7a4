"""Vimeo-90K training loader throughput (samples/s) with on-the-fly MATLAB-bicubic LR vs a pre-made LR tree.

Builds a temporary Vimeo-90K layout of real-sized septuplets (448×256 PNGs), then iterates the training loader
(batch 24, 2 workers) for a fixed number of batches. Compare with the network's training step time to see
whether loading can starve training. Run: python bench/zsm_loader.py [--clips 48] [--batches 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, RandomSampler

from projects.zsm.data import Vimeo90KSeptuplet
from shared.imresize import imresize
from shared.io import write_image


def make_layout(root: Path, clips: int, with_lr: bool) -> None:
    rng = np.random.default_rng(0)
    keys = []
    for c in range(clips):
        key = f"00001/{c + 1:04d}"
        base = (rng.random((256 + 14, 448 + 14, 3)) * 255).astype(np.uint8)
        for i in range(7):
            hr = base[2 * i : 2 * i + 256, 2 * i : 2 * i + 448]
            write_image(root / "sequences" / key / f"im{i + 1}.png", hr)
            if with_lr:
                write_image(root / "lr" / "sequences" / key / f"im{i + 1}.png", imresize(hr, 0.25))
        keys.append(key)
    (root / "list.txt").write_text("\n".join(keys) + "\n")


def rate(ds, batches: int, workers: int, batch: int) -> float:
    sampler = RandomSampler(ds, replacement=True, num_samples=batch * (batches + 1))
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)
    it = iter(loader)
    next(it)  # worker start-up
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += next(it)["lr"].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=24)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_layout(root, args.clips, with_lr=True)
        fly = Vimeo90KSeptuplet(str(root), str(root / "list.txt"), train=True)
        pre = Vimeo90KSeptuplet(str(root), str(root / "list.txt"), lr_root=str(root / "lr"), train=True)
        r_fly = rate(fly, args.batches, args.workers, args.batch)
        r_pre = rate(pre, args.batches, args.workers, args.batch)
    print(f"workers={args.workers} batch={args.batch} (448×256 septuplets, 32×32 LR crops)")
    print("| LR source | samples/s |")
    print("|---|---|")
    print(f"| on the fly (MATLAB bicubic) | {r_fly:.1f} |")
    print(f"| pre-made LR tree | {r_pre:.1f} |")


if __name__ == "__main__":
    main()
