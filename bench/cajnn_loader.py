"""CAJNN training-pair throughput (samples/s) in the chapter's order (Sec. 4.4.1: whole image ↓4 → JPEG of the
whole LR → crop), with and without the clean-LR cache, next to the old crop-first order for reference.

Builds a temporary folder of DIV2K-sized PNGs (2040×1356, scikit-image photos upscaled with a little noise so they
compress like photos), then draws training items (128-px HR / 32-px LR patches, random QF in [10, 100]).
Per-item cost is split into its stages. Run: python bench/cajnn_loader.py [--images 6] [--items 48] [--workers 2]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from shared.degradations import jpeg
from shared.imresize import imresize, modcrop
from shared.io import read_image, write_image
from shared.srdata import HRCropDataset

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]


def make_images(root: Path, n: int) -> list[Path]:
    from skimage import data

    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        img = getattr(data, PHOTOS[i % len(PHOTOS)])()[..., :3]
        img = cv2.resize(np.ascontiguousarray(img), (2040, 1356), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        files.append(root / f"{i:04d}.png")
        write_image(files[-1], img)
    return files


def stage_times(files: list[Path], reps: int) -> dict[str, float]:
    """Mean seconds per call of each stage, on one process."""
    out: dict[str, list[float]] = {k: [] for k in ("read HR PNG", "MATLAB ↓4 whole image", "read cached LR PNG",
                                                   "JPEG whole LR", "crop-first: ↓4 + JPEG of the 128-px crop")}
    for r in range(reps):
        f = files[r % len(files)]
        t = time.perf_counter()
        hr = modcrop(read_image(f), 4)
        out["read HR PNG"].append(time.perf_counter() - t)
        t = time.perf_counter()
        lr = imresize(hr, 0.25)
        out["MATLAB ↓4 whole image"].append(time.perf_counter() - t)
        tmp = f.with_suffix(".lr.png")
        write_image(tmp, lr)
        t = time.perf_counter()
        read_image(tmp)
        out["read cached LR PNG"].append(time.perf_counter() - t)
        t = time.perf_counter()
        jpeg(lr, random.randint(10, 100))
        out["JPEG whole LR"].append(time.perf_counter() - t)
        t = time.perf_counter()
        jpeg(imresize(np.ascontiguousarray(hr[:128, :128]), 0.25), random.randint(10, 100))
        out["crop-first: ↓4 + JPEG of the 128-px crop"].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in out.items()}


def rate(ds, items: int, workers: int, batch: int = 6) -> float:
    """Samples/s over ``items`` items, timed from the loader's start (worker start-up included, so prefetching
    cannot flatter it)."""
    sampler = RandomSampler(ds, replacement=True, num_samples=items)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)
    t0 = time.perf_counter()
    n = sum(b["lr"].shape[0] for b in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as in a loader worker
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_images(root / "hr", args.images)
        mb = np.mean([f.stat().st_size for f in files]) / 2**20
        print(f"{args.images} PNGs of 2040×1356, {mb:.1f} MiB each")
        for k, v in stage_times(files, 2 * args.images).items():
            print(f"  {k:45s} {1000 * v:8.1f} ms")
        cache = root / "cache"
        warm = HRCropDataset(files, 4, 128, (10, 100), lr_cache_dir=cache)
        for i in range(len(files)):  # fill the cache once (what the first epoch does)
            warm[i]
        for workers in sorted({0, args.workers}):
            no_cache = rate(HRCropDataset(files, 4, 128, (10, 100)), args.items // 4, workers)
            cached = rate(HRCropDataset(files, 4, 128, (10, 100), lr_cache_dir=cache), args.items, workers)
            print(f"workers={workers}: {cached:6.1f} samples/s with the LR cache, {no_cache:6.2f} without")


if __name__ == "__main__":
    main()
