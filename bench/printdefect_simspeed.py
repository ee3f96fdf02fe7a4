"""Print defects (issue 19): the simulator's speed — one 600-dpi A4 page (4962×7014) rendered and written as a user
runs ``python -m projects.printdefect.simulate`` (PNG with alpha mask + ground-truth json), per domain.

    python bench/printdefect_simspeed.py [--pages 3] [--threads 2] [--domains a b wide]

Prints the median seconds per page and its stages (render = print + scanner + visibility; write = PNG + json) and
the load average, since other processes on a shared machine change the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--domains", nargs="+", default=["a", "b", "wide"])
    ap.add_argument("--size", default="a4")
    args = ap.parse_args()
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from projects.printdefect.page import write_page
    from projects.printdefect.simulate import domain_config, simulate_page
    from shared.io import atomic_write_text

    simulate_page(domain_config("wide", size=[600, 500], grid=[1, 1], margin_mm=2, barcode_mm=1), seed=0)  # compile
    out = Path(tempfile.mkdtemp())
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, {args.threads} threads\n")
    print("| domain | render s | write s | **page s** | screens |\n|---|---|---|---|---|")
    for dom in args.domains:
        cfg = domain_config(dom, size=args.size)
        render, write, screens = [], [], []
        for i in range(args.pages):
            t = time.perf_counter()
            rgb, mask, gt = simulate_page(cfg, seed=1000 + i)
            t1 = time.perf_counter()
            write_page(out / "p.png", rgb, mask, cfg.dpi)
            atomic_write_text(out / "p.json", json.dumps(gt, indent=1) + "\n")
            write.append(time.perf_counter() - t1)
            render.append(t1 - t)
            screens.append(f"{gt['scan']['screen']} {gt['scan']['lpi']:.0f}")
        r, w = statistics.median(render), statistics.median(write)
        print(f"| {dom} | {r:.2f} | {w:.2f} | **{r + w:.2f}** | {', '.join(screens)} |")
    print(f"\nload average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
