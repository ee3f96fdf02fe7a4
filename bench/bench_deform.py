"""deform_conv2d: native (grid_sample + matmul) vs torchvision, forward and forward+backward, side by side.

The issue's reference layer: 64->64, 3x3, 8 offset groups, modulated, on 1x64x128x128.
Run: python bench/bench_deform.py [--device cpu|cuda] [--repeat N] [--dtype float32|bfloat16|float16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from shared.ops.deform import deform_conv2d


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device: str, repeat: int) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    dev, dtype = args.device, getattr(torch, args.dtype)
    torch.manual_seed(0)
    s = args.size
    x = torch.randn(1, 64, s, s, device=dev, dtype=dtype, requires_grad=True)
    off = (torch.randn(1, 2 * 8 * 9, s, s, device=dev) * 2).to(dtype).requires_grad_()
    mask = torch.rand(1, 8 * 9, s, s, device=dev, dtype=dtype, requires_grad=True)
    w = (torch.randn(64, 64, 3, 3, device=dev) * 0.05).to(dtype).requires_grad_()
    b = torch.zeros(64, device=dev, dtype=dtype, requires_grad=True)
    # torchvision has no bf16 kernel (CPU or CUDA) and no fp16 kernel on CPU
    tv_ok = dtype in (torch.float32, torch.float64) or (dtype == torch.float16 and dev == "cuda")
    backends = ["native"] + (["torchvision"] if tv_ok else [])

    rows = []
    for be in backends:
        def fwd(be=be):
            with torch.no_grad():
                deform_conv2d(x, off, w, b, 1, 1, 1, mask, backend=be)

        def fwd_bwd(be=be):
            deform_conv2d(x, off, w, b, 1, 1, 1, mask, backend=be).sum().backward()

        rows.append((be, timeit(fwd, dev, args.repeat), timeit(fwd_bwd, dev, args.repeat)))
    with torch.no_grad():
        ref = deform_conv2d(x.float(), off.float(), w.float(), b.float(), 1, 1, 1, mask.float(), backend="torchvision")
        nat = deform_conv2d(x, off, w, b, 1, 1, 1, mask, backend="native").float()
    print(f"device={dev} dtype={args.dtype} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"torchvision={torchvision.__version__} input=1x64x{s}x{s} 3x3 og=8")
    print(f"max |native - torchvision(fp32)| = {(nat - ref).abs().max().item():.3e}")
    print("| backend | forward ms | fwd+bwd ms |")
    print("|---|---|---|")
    for be, f, fb in rows:
        print(f"| {be} | {f * 1e3:.1f} | {fb * 1e3:.1f} |")
    if len(rows) == 2:
        print(f"speed-up native vs torchvision: forward {rows[1][1] / rows[0][1]:.2f}x, "
              f"fwd+bwd {rows[1][2] / rows[0][2]:.2f}x")


if __name__ == "__main__":
    main()
