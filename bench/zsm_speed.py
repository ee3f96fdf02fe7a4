"""ZSM forward time per output frame and peak memory: our DCN op vs the torchvision DCN backend, in one run.

Full-size network (11.1M parameters) with non-zero offsets, 4 LR input frames → 7 outputs, batch 1, inference
mode. Each (size, backend) runs in its own process so peak memory is its own.
Run: python bench/zsm_speed.py [--sizes 64 128 180x144] [--device cpu|cuda] [--repeat 3]
(a size is N for N×N or WxH; Vid4 LR frames are 180x144)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def build(device: str):
    from projects.zsm.model import ZSM
    from shared.ops.deform import ModulatedDeformConv2d

    torch.manual_seed(0)
    net = ZSM()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ModulatedDeformConv2d):  # a trained-looking state: offsets of a few pixels
                m.conv_offset_mask.weight.normal_(0, 0.01)
    return net.to(device).eval()


def parse_size(size: str) -> tuple[int, int]:
    """'64' -> (64, 64); '180x144' -> (width 180, height 144)."""
    w, _, h = size.lower().partition("x")
    return int(w), int(h or w)


def single(size: str, backend: str, device: str, repeat: int) -> dict:
    from shared.ops.deform import set_default_backend

    set_default_backend(backend)
    net = build(device)
    w, h = parse_size(size)
    x = torch.rand(1, 4, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode():
        out = net(x)
        for _ in range(repeat):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = net(x)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    mem = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"s_per_frame": statistics.median(times) / out.shape[1], "mem_mb": mem,
            "checksum": out.double().mean().item(), "corner": out[0, 3, :, :8, :8].double().flatten().tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["64", "128"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--single", nargs=2, metavar=("SIZE", "BACKEND"))
    args = ap.parse_args()
    if args.single:
        print(json.dumps(single(args.single[0], args.single[1], args.device, args.repeat)))
        return
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print("| LR input | backend | s / output frame | peak memory (MB) |")
    print("|---|---|---|---|")
    for s in args.sizes:
        w, h = parse_size(s)
        res = {}
        for backend in ("native", "torchvision"):
            out = subprocess.run([sys.executable, __file__, "--single", s, backend, "--device", args.device,
                                  "--repeat", str(args.repeat)], capture_output=True, text=True, check=True)
            res[backend] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {w}×{h} | {backend} | {res[backend]['s_per_frame']:.3f} | {res[backend]['mem_mb']:.0f} |")
        diff = max(abs(a - b) for a, b in zip(res["native"]["corner"], res["torchvision"]["corner"]))
        print(f"{w}×{h}: native is {res['torchvision']['s_per_frame'] / res['native']['s_per_frame']:.2f}x faster; "
              f"max |diff| on a 8×8 output patch {diff:.1e}")


if __name__ == "__main__":
    main()
