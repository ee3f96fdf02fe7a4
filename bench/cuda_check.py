"""CUDA correctness and training-step speed, in one run (needs a GPU; never part of `make test`).

1. deform_conv2d on CUDA: native vs torchvision (fp32) forward and all four gradients, and native CUDA vs native CPU.
2. Full-size training steps (forward + backward + Adam) of ZSM (batch 12, 32×32 LR crops, 4→7 frames: the paper's
   24 on 2 GPUs, per GPU) and CAJNN (batch 16, 48×48 LR crops) per DCN backend and precision, side by side.
fp32 steps use TF32 matrix products (`--matmul high`, what the training configs set through
float32_matmul_precision) unless `--matmul highest`.
Run: python bench/cuda_check.py [--steps 10] [--matmul high|highest] [--skip-deform] [--only zsm|cajnn]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def check_deform() -> None:
    from shared.ops.deform import deform_conv2d

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 40, 48, generator=g)
    off = torch.randn(2, 2 * 8 * 9, 40, 48, generator=g) * 3
    mask = torch.rand(2, 8 * 9, 40, 48, generator=g)
    w = torch.randn(64, 64, 3, 3, generator=g) * 0.05
    b = torch.randn(64, generator=g)

    def run(device: str, backend: str):
        ts = [t.to(device).requires_grad_() for t in (x, off, mask, w, b)]
        y = deform_conv2d(ts[0], ts[1], ts[3], ts[4], 1, 1, 1, ts[2], backend=backend)
        (y * torch.linspace(-1, 1, y.numel(), device=device).view_as(y)).sum().backward()
        return [y.detach().cpu()] + [t.grad.cpu() for t in ts]

    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # compare exact fp32 arithmetic
    ref = run("cuda", "torchvision")
    for name, got in (("native cuda", run("cuda", "native")), ("native cpu", run("cpu", "native"))):
        diffs = [(a - r).abs().max().item() / max(r.abs().max().item(), 1e-12) for a, r in zip(got, ref, strict=True)]
        print(f"deform_conv2d {name} vs torchvision cuda (max rel diff: out, d_x, d_offset, d_mask, d_w, d_b): "
              + ", ".join(f"{d:.1e}" for d in diffs))
        assert max(diffs) < 1e-3, f"{name} disagrees with torchvision on CUDA"
    torch.set_float32_matmul_precision(saved)


def time_steps(net: torch.nn.Module, make_batch, steps: int, precision: str) -> tuple[float, float]:
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    inp, target = make_batch()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    times = []
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.sqrt((net(inp).float() - target) ** 2 + 1e-6).mean()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    assert torch.isfinite(loss), f"loss not finite ({precision})"
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**30


def bench_training(steps: int, only: str | None) -> None:
    from projects.cajnn.model import CAJNN
    from projects.zsm.model import ZSM
    from shared.ops.deform import set_default_backend

    print("| network | batch | DCN backend | precision | s / step | peak GPU memory (GiB) |")
    print("|---|---|---|---|---|---|")
    for backend in ("native", "torchvision") if only in (None, "zsm") else ():
        for precision in ("fp32", "bf16", "fp16"):
            if backend == "torchvision" and precision == "bf16":
                continue  # torchvision has no bf16 kernel
            set_default_backend(backend)
            torch.manual_seed(0)
            net = ZSM().cuda().train()
            t, mem = time_steps(net, lambda: (torch.rand(12, 4, 3, 32, 32, device="cuda"),
                                              torch.rand(12, 7, 3, 128, 128, device="cuda")), steps, precision)
            print(f"| ZSM | 12 | {backend} | {precision} | {t:.3f} | {mem:.1f} |")
            del net
            torch.cuda.empty_cache()
    for precision in ("fp32", "bf16") if only in (None, "cajnn") else ():
        torch.manual_seed(0)
        net = CAJNN().cuda().train()
        t, mem = time_steps(net, lambda: (torch.rand(16, 3, 48, 48, device="cuda"),
                                          torch.rand(16, 3, 192, 192, device="cuda")), steps, precision)
        print(f"| CAJNN | 16 | — | {precision} | {t:.3f} | {mem:.1f} |")
    set_default_backend("auto")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--matmul", default="high", choices=["high", "highest", "medium"])
    ap.add_argument("--skip-deform", action="store_true")
    ap.add_argument("--only", choices=["zsm", "cajnn"])
    args = ap.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    torch.set_float32_matmul_precision(args.matmul)
    print(f"{torch.cuda.get_device_name()} torch={torch.__version__} float32_matmul_precision={args.matmul}")
    torch.backends.cudnn.benchmark = True
    if not args.skip_deform:
        check_deform()
    bench_training(args.steps, args.only)


if __name__ == "__main__":
    main()
