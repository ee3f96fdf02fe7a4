"""Why references help or not: one trained HIME network on the demo's held-out people, the same targets with
different reference sets — no training, a diagnostic of what the network does with what it is given.

    python bench/hime_references.py logs/hime/demo/runs/<time>/checkpoints/last.ckpt [--data data/hime_demo]

For every held-out photo/frame (its MATLAB-bicubic ×1/4 the input), PSNR (RGB, like the demo's tables) of:
``none`` (no references); ``other photos (cycled)`` (the person's other images in order, repeated to three; the
demo's eval draws them with replacement, seeded); ``other photos, colour-matched`` (each reference's per-channel
mean and spread set to those of the bicubic input — lighting removed, expression and detail kept); ``views of the
target`` (oracle: the target's own photo moved, scaled, turned, lit differently — what every training reference of
a photo person is); ``the target itself`` (oracle upper bound).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_REFS = 3


def colour_matched(ref: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``ref`` with each channel's mean and standard deviation set to those of ``like``."""
    r, t = ref.astype(np.float64), like.astype(np.float64)
    out = (r - r.mean((0, 1))) / (r.std((0, 1)) + 1e-6) * t.std((0, 1)) + t.mean((0, 1))
    return np.clip(out, 0, 255).round().astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ckpt")
    ap.add_argument("--data", default="data/hime_demo")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from hydra.utils import instantiate

    from projects.hime.demo_data import augmented_views
    from shared.checkpoint import load_weights
    from shared.imresize import imresize
    from shared.io import image_to_tensor, read_image
    from shared.metrics import psnr  # the demo tables' PSNR: 8-bit-rounded RGB, peak 255
    from shared.run import compose_config

    cfg = compose_config("hime", "eval", ["+experiment=demo"])
    module = instantiate(cfg.model, _convert_="all")
    load_weights(module, a.ckpt, a.ckpt)
    module.eval()
    rng = np.random.default_rng(a.seed)
    names = ["none", "other photos (cycled)", "other photos, colour-matched", "views of the target (oracle)",
             "the target itself (oracle)"]
    print(f"checkpoint {a.ckpt}; {N_REFS} references; PSNR (dB, RGB) averaged over each person's images\n")
    print("| held-out person | images | bicubic | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for person in sorted(p for p in (Path(a.data) / "eval").iterdir() if p.is_dir()):
        files = sorted(person.glob("*.png"))
        scores = np.zeros((len(files), len(names) + 1))
        for i, f in enumerate(files):
            hr = read_image(f)
            lr = imresize(hr, 1 / 4)
            up = imresize(lr, 4.0)
            others = [read_image(g) for g in files if g != f]
            sets = [None, [others[k % len(others)] for k in range(N_REFS)]]
            sets.append([colour_matched(r, up) for r in sets[1]])
            sets.append(augmented_views(hr, N_REFS + 1, rng)[1:])
            sets.append([hr] * N_REFS)
            hr_t, lr_t = image_to_tensor(hr)[None], image_to_tensor(lr)[None]
            scores[i, 0] = float(psnr(image_to_tensor(up)[None], hr_t)[0])
            with torch.inference_mode():
                for j, refs in enumerate(sets):
                    r = None if refs is None else torch.stack([image_to_tensor(x) for x in refs])[None]
                    scores[i, j + 1] = float(psnr(module(lr_t, r), hr_t)[0])
        m = scores.mean(0)
        print(f"| {person.name} | {len(files)} | " + " | ".join(f"{v:.2f}" for v in m) + " |")


if __name__ == "__main__":
    main()
