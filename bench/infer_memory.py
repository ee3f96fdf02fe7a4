"""Inference on large media: peak memory (max RSS of the whole process) and seconds per output frame/image, for
whole frames, ``infer_tile=auto`` (within ``infer_options.max_memory_gb``) and fixed tiles — side by side.

Each run is the real CLI (``python -m projects.<p>.infer``) in its own process on a synthetic input (a moving
textured pattern), measured from outside (``os.wait4``: the child's own max RSS and wall time).

    python bench/infer_memory.py zsm --model tiny --sizes 360p 720p --frames 8 24 --modes whole auto 128
    python bench/infer_memory.py cajnn --model tiny --sizes 4k --modes whole auto
    python bench/infer_memory.py hime --model tiny --sizes 1080p --modes whole auto

``--model full`` uses the paper's network (ZSM: 11.1M parameters); ``--max-memory-gb`` sets the budget of ``auto``.
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("project", choices=["zsm", "cajnn", "hime"])
    ap.add_argument("--model", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--sizes", nargs="+", default=["360p"])
    ap.add_argument("--frames", nargs="+", type=int, default=[8])
    ap.add_argument("--modes", nargs="+", default=["whole", "auto", "128"])
    ap.add_argument("--max-memory-gb", type=float, default=4.0)
    ap.add_argument("--precision", default=None)
    a = ap.parse_args()
    from shared.io import write_image, write_video

    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    env = {**os.environ, "LOG_DIR": str(tmp / "logs"), "PYTHONWARNINGS": "ignore"}
    model = ["model=tiny"] if a.model == "tiny" else []
    if a.project == "hime":
        model.append("infer_options.face_crop=never")
    if a.precision:
        model.append(f"model.infer_precision={a.precision}")
    print(f"{a.project} ({a.model} network), {os.cpu_count()} cores; budget of auto: {a.max_memory_gb} GB\n")
    unit = "output frame" if a.project == "zsm" else "image"
    print(f"| input | frames | tiling | wall (s) | s / {unit} | peak RSS (GiB) | plan |")
    print("|---|---|---|---|---|---|---|")
    for size in a.sizes:
        w, h = SIZES[size] if size in SIZES else tuple(int(v) for v in size.split("x"))
        for n in a.frames if a.project == "zsm" else [1]:
            if a.project == "zsm":
                src = tmp / f"clip_{w}x{h}_{n}.mp4"
                write_video(src, (pattern(w, h, t) for t in range(n)), fps=25, crf=12)
                dst, outputs = tmp / "out.mp4", 2 * n - 1
            else:
                src = tmp / f"still_{w}x{h}.png"
                write_image(src, pattern(w, h, 0))
                dst, outputs = tmp / "out.png", 1
            for mode in a.modes:
                tile = {"whole": "null", "auto": "auto"}.get(mode, mode)
                cmd = [sys.executable, "-m", f"projects.{a.project}.infer", *model, "allow_untrained=true",
                       f"input={src}", f"output={dst}", f"model.infer_tile={tile}",
                       f"infer_options.max_memory_gb={a.max_memory_gb}"]
                wall, rss, text = run(cmd, env)
                line = next((ln for ln in text.splitlines() if "LR →" in ln), "")
                plan = line.split("LR →", 1)[1].split(";")[0].strip() if line else ""
                if "H.264" in line:  # the encoder's settings and memory, as the plan counted them
                    plan += "; H.264 " + line.split("H.264", 1)[1].strip()
                print(f"| {w}×{h} | {n if a.project == 'zsm' else '–'} | {mode} | {wall:.1f} | {wall / outputs:.2f} | "
                      f"{rss:.2f} | {plan} |", flush=True)


if __name__ == "__main__":
    main()
