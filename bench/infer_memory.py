"""Inference on large media: peak memory (max RSS of the whole process) and seconds per output frame/image, for
whole frames, ``infer_tile=auto`` (within ``infer_options.max_memory_gb``) and fixed tiles — side by side.

Each run is the real CLI (``python -m projects.<p>.infer``) in its own process on a synthetic input (a moving
textured pattern), measured from outside (``os.wait4``: the child's own max RSS and wall time).

    python bench/infer_memory.py zsm --model tiny --sizes 360p 720p --frames 8 24 --modes whole auto 128
    python bench/infer_memory.py cajnn --model tiny --sizes 4k --modes whole auto
    python bench/infer_memory.py hime --model tiny --sizes 1080p --modes whole auto

``--model full`` uses the paper's network (ZSM: 11.1M parameters); ``--max-memory-gb`` sets the budget of ``auto``;
``--ckpt PATH --set +experiment=demo`` runs a trained checkpoint (with its config overrides) instead of untrained
weights. Every row after the first of an input also says how far its output is from the first row's (8-bit levels,
read back from the written files: tiles that overlap by less than the network's receptive field are close to the
whole-frame result, not equal to it); ``--png`` makes ZSM write PNG frames, so that comparison is exact.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}


def pattern(w: int, h: int, t: int) -> np.ndarray:
    """A smooth moving texture (not flat: the network does real work; not noise: it compresses)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([np.sin((x + 3 * t) / 17.0) + np.cos(y / 23.0), np.sin((x + y + 2 * t) / 31.0),
                    np.cos((x - y - t) / 13.0)], axis=-1)
    return ((img - img.min()) / (np.ptp(img) + 1e-6) * 255).astype(np.uint8)


def run(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall s, peak RSS GiB, stderr tail) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 2**20, (out + err)


def agreement(a: Path, b: Path) -> str:
    """Max |a − b| in 8-bit levels over every decoded frame (or the image) and the share of values that differ —
    the outputs of two tilings, read back frame by frame (never a whole clip in memory)."""
    from shared.io import iter_video, read_image

    if a.suffix == ".mp4":
        pairs = zip(iter_video(a), iter_video(b), strict=True)
    elif a.is_dir():
        pairs = ((read_image(x), read_image(y)) for x, y in zip(sorted(a.glob("*.png")), sorted(b.glob("*.png")),
                                                                  strict=True))
    else:
        pairs = [(read_image(a), read_image(b))]
    worst, differ, total = 0, 0, 0
    for x, y in pairs:
        d = np.abs(x.astype(np.int16) - y.astype(np.int16))
        worst, differ, total = max(worst, int(d.max())), differ + int(np.count_nonzero(d)), total + d.size
    return f"{worst} ({differ / total:.1e})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("project", choices=["zsm", "cajnn", "hime"])
    ap.add_argument("--model", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--sizes", nargs="+", default=["360p"])
    ap.add_argument("--frames", nargs="+", type=int, default=[8])
    ap.add_argument("--modes", nargs="+", default=["whole", "auto", "128"])
    ap.add_argument("--max-memory-gb", type=float, default=4.0)
    ap.add_argument("--precision", default=None)
    ap.add_argument("--ckpt", default=None, help="a trained checkpoint instead of untrained (seeded) weights")
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides, e.g. +experiment=demo")
    ap.add_argument("--png", action="store_true",
                    help="zsm: write PNG frame folders, not H.264 (lossless: the output comparison is exact; an "
                         "encoder turns a one-level difference into different coding decisions across the frame)")
    a = ap.parse_args()
    from shared.io import write_image, write_video

    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    env = {**os.environ, "LOG_DIR": str(tmp / "logs"), "PYTHONWARNINGS": "ignore"}
    model = ["model=tiny"] if a.model == "tiny" and not a.ckpt else []
    model += [f"ckpt_path={a.ckpt}"] if a.ckpt else ["allow_untrained=true", "seed=0"]
    model += a.set
    if a.project == "hime":
        model.append("infer_options.face_crop=never")
    if a.precision:
        model.append(f"model.infer_precision={a.precision}")
    net = f"checkpoint {a.ckpt} {' '.join(a.set)}" if a.ckpt else f"{a.model} network, untrained (seed 0)"
    print(f"{a.project} ({net}), {os.cpu_count()} cores; budget of auto: {a.max_memory_gb} GB\n")
    unit = "output frame" if a.project == "zsm" else "image"
    print(f"| input | frames | tiling | wall (s) | s / {unit} | peak RSS (GiB) | max Δ vs first (share) | plan |")
    print("|---|---|---|---|---|---|---|---|")
    for size in a.sizes:
        w, h = SIZES[size] if size in SIZES else tuple(int(v) for v in size.split("x"))
        for n in a.frames if a.project == "zsm" else [1]:
            if a.project == "zsm":
                src = tmp / f"clip_{w}x{h}_{n}.mp4"
                write_video(src, (pattern(w, h, t) for t in range(n)), fps=25, crf=12)
                ext, outputs = ("" if a.png else ".mp4"), 2 * n - 1
            else:
                src = tmp / f"still_{w}x{h}.png"
                write_image(src, pattern(w, h, 0))
                ext, outputs = ".png", 1
            first = None
            for mode in a.modes:
                dst = tmp / f"out_{mode}{ext}"
                tile = {"whole": "null", "auto": "auto"}.get(mode, mode)
                cmd = [sys.executable, "-m", f"projects.{a.project}.infer", *model,
                       f"input={src}", f"output={dst}", f"model.infer_tile={tile}",
                       f"infer_options.max_memory_gb={a.max_memory_gb}"]
                wall, rss, text = run(cmd, env)
                line = next((ln for ln in text.splitlines() if "LR →" in ln), "")
                plan = line.split("LR →", 1)[1].split(";")[0].strip() if line else ""
                if "H.264" in line:  # the encoder's settings and memory, as the plan counted them
                    plan += "; H.264 " + line.split("H.264", 1)[1].strip()
                same = "–" if first is None else agreement(first, dst)
                first = first or dst
                print(f"| {w}×{h} | {n if a.project == 'zsm' else '–'} | {mode} | {wall:.1f} | {wall / outputs:.2f} | "
                      f"{rss:.2f} | {same} | {plan} |", flush=True)
            for f in tmp.glob(f"out_*{ext}"):  # files / frame folders this bench made in its own temporary folder
                shutil.rmtree(f) if f.is_dir() else f.unlink()


if __name__ == "__main__":
    main()
