"""CAJNN (Ch. 4) and HIME (Ch. 5) inference speed per setting, side by side in one run: fp32, channels_last, bf16
autocast (CPUs with bf16 instructions, or CUDA), both — the full-size networks of the paper configs, same weights
and input, round-robin; median seconds per image, ratio to fp32, largest |difference| from fp32.

    python bench/sr_infer_speed.py [--cajnn 128] [--hime 32] [--refs 3] [--device cpu] [--repeat 3]

(sizes are LR sides: CAJNN ×4 → 512² at 128; HIME ×4 with ``--refs`` references of the HR size)
"""

from __future__ import annotations

import argparse
import contextlib
import copy

import torch
from hydra.utils import instantiate
from zsm_speed import time_variants, trained_looking_offsets  # bench/ is on the path when run as a script


def net_of(project: str) -> torch.nn.Module:
    from shared.run import compose_config

    torch.manual_seed(0)
    return trained_looking_offsets(instantiate(compose_config(project, "train").model.net).eval())


def compare(label: str, net: torch.nn.Module, inputs: tuple, device: str, repeat: int) -> None:
    from shared.inference import precision_context, use_channels_last

    dev = torch.device(device)
    net = net.to(dev)
    inputs = tuple(x.to(dev) for x in inputs)
    cl = use_channels_last(copy.deepcopy(net), True)
    fp32, bf16 = contextlib.nullcontext, (lambda: precision_context(dev, "bf16"))
    runs = {"fp32": (net, fp32), "channels_last": (cl, fp32), "bf16": (net, bf16), "bf16 + channels_last": (cl, bf16)}
    times, outs = time_variants(runs, inputs, device, repeat)
    ref = times["fp32"]
    for name in runs:
        t = times[name]
        print(f"| {label} | {name} | {t:.3f} | {ref / t:.2f}× | {float((outs[name] - outs['fp32']).abs().max()):.1e} |")


def main() -> None:
    from shared.inference import cpu_has_bf16

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cajnn", type=int, default=128)
    ap.add_argument("--hime", type=int, default=32)
    ap.add_argument("--refs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(1)
    print(f"device={a.device} threads={torch.get_num_threads()} torch={torch.__version__} cpu bf16={cpu_has_bf16()}; "
          f"median of {a.repeat} after a warm-up\n")
    print("| network, LR input | setting | s / image | speed-up vs fp32 | max abs diff vs fp32 |")
    print("|---|---|---|---|---|")
    s = a.cajnn
    compare(f"CAJNN {s}×{s} → {4 * s}²", net_of("cajnn"), (torch.rand(1, 3, s, s, generator=g),), a.device, a.repeat)
    s = a.hime
    hime = net_of("hime")
    compare(f"HIME {s}×{s} ×{hime.scale}, {a.refs} refs", hime,
            (torch.rand(1, 3, s, s, generator=g), torch.rand(1, a.refs, 3, s * hime.scale, s * hime.scale,
                                                              generator=g)), a.device, a.repeat)


if __name__ == "__main__":
    main()
