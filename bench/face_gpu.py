"""Full-size training steps of the chapter 2 and 3 networks on a GPU (or any device), side by side per precision.

* faceset: sphere20a (22.67M) + A-Softmax (m = 4) on 112×96 crops, batch 256 (the CASIA-WebFace recipe), 10,572
  identities; the multi-column aggregation stage (backbone frozen) on sets of 3 faces, batch 64 sets.
* facealign: the VGG-style first level and the two-level cascade on 112×112 crops, batch 64, L2 loss.

Each step = forward + loss + backward + SGD/Adam update through the LightningModule's own ``configure_optimizers``
(learning rate 1e-3: the same batch of random faces is repeated, and the recipe's 0.1 diverges on it).
    python bench/face_gpu.py [--device cuda] [--steps 10] [--scale 1.0]
``--scale`` multiplies the batch sizes (a CPU smoke run: --device cpu --steps 1 --scale 0.02).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_module(module, make_batch, loss_of, steps: int, device: torch.device, precision: str) -> tuple[float, float]:
    """Median seconds per step and peak memory (GiB, CUDA only)."""
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    dtype = {"bf16": torch.bfloat16}.get(precision)
    batch = make_batch()
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 2):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_of(module, batch)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    assert torch.isfinite(loss), f"loss not finite ({precision})"
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return statistics.median(times), mem


def faceset_cases(device: torch.device, scale: float):
    from hydra.utils import instantiate

    from shared.run import compose_config

    classes = 10572
    n = max(2, int(256 * scale))

    def backbone():
        cfg = compose_config("faceset", "train", ["model=sphereface", "model.optimizer.lr=1e-3"])
        return instantiate(cfg.model, num_classes=classes, _convert_="all")

    def aggregation():
        cfg = compose_config("faceset", "train", ["model=multicolumn", "model.optimizer.lr=1e-3"])
        return instantiate(cfg.model, num_classes=classes, _convert_="all")

    def faces():
        return {"image": torch.randn(n, 3, 112, 96, device=device),
                "label": torch.randint(0, classes, (n,), device=device)}

    def sets():
        k = max(2, int(64 * scale))
        return {"images": torch.randn(k, 3, 3, 112, 96, device=device),
                "label": torch.randint(0, classes, (k,), device=device)}

    def loss(module, batch):
        desc = module.descriptors(batch)
        return F.cross_entropy(module.head(desc, batch["label"], 0).float(), batch["label"])

    return [("faceset sphere20a + A-Softmax", n, backbone, faces, loss),
            ("faceset multi-column aggregation (3 faces/set)", max(2, int(64 * scale)), aggregation, sets, loss)]


def facealign_cases(device: torch.device, scale: float):
    from hydra.utils import instantiate

    from shared.run import compose_config

    n = max(2, int(64 * scale))

    def build(model):
        return lambda: instantiate(compose_config("facealign", "train", [f"model={model}"]).model, _convert_="all")

    def crops():
        return {"image": torch.rand(n, 3, 112, 112, device=device),
                "target": torch.rand(n, 68, 2, device=device) * 0.5 + 0.25}

    def loss(module, batch):
        if hasattr(module.net, "levels"):
            p1, p2 = module.net.levels(batch["image"])
            return module.loss_fn(p2.float(), batch["target"]) + module.loss_fn(p1.float(), batch["target"])
        return module.loss_fn(module.net(batch["image"]).float(), batch["target"])

    return [("facealign VGG first level", n, build("vgg"), crops, loss),
            ("facealign two-level cascade", n, build("cascade"), crops, loss)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print("| network | batch | params | precision | s / step | peak GPU memory (GiB) |")
    print("|---|---|---|---|---|---|")
    for name, batch, build, make_batch, loss in [*faceset_cases(device, args.scale),
                                                 *facealign_cases(device, args.scale)]:
        module = build().to(device).train()
        params = sum(p.numel() for p in module.parameters())
        for precision in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
            s, mem = time_module(module, make_batch, loss, args.steps, device, precision)
            print(f"| {name} | {batch} | {params / 1e6:.2f}M | {precision} | {s:.4f} | {mem:.2f} |", flush=True)
        del module
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
