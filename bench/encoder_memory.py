"""Memory of the H.264 encoder (libx264 through PyAV, as ``shared.io.write_video`` runs it) against clip length and
x264's ``rc-lookahead``: each row one child process encoding N synthetic frames of the given size, its peak RSS
(``os.wait4``) minus a child that makes the same frames without encoding them.

    python bench/encoder_memory.py --size 2560x1440 --frames 7 31 63 127 --lookahead 40 8
    python bench/encoder_memory.py --size 7680x4320 --frames 7 15 --lookahead 4 0

Shows where the memory of long videos goes (the encoder's look-ahead queue, which stops growing once full), what
``shared.io.encoder_bytes`` should budget for it, and what the low-memory settings (look-ahead 0:
``shared.io.X264_LOW_MEMORY``) cost in file size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

# infer_memory.pattern's frames, with the pixel grid made once per process: pattern() makes it per frame, and
# those temporaries would blur the subtraction of the child that does not encode
CHILD = r"""
import sys, numpy as np
sys.path.insert(0, {root!r})
from shared.io import write_video
n, w, h, la = {n}, {w}, {h}, {la}
y, x = np.mgrid[0:h, 0:w].astype(np.float32)
def frames():
    for t in range(n):
        img = np.stack([np.sin((x + 3 * t) / 17.0) + np.cos(y / 23.0), np.sin((x + y + 2 * t) / 31.0),
                        np.cos((x - y - t) / 13.0)], axis=-1)
        yield ((img - img.min()) / (np.ptp(img) + 1e-6) * 255).astype(np.uint8)
if la < 0:
    for f in frames():
        pass
else:
    write_video({out!r}, frames(), lookahead=la)
"""


def peak_rss(code: str) -> float:
    proc = subprocess.Popen([sys.executable, "-c", code])
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit("child failed")
    return usage.ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="2560x1440")
    ap.add_argument("--frames", nargs="+", type=int, default=[7, 31, 63, 127])
    ap.add_argument("--lookahead", nargs="+", type=int, default=[40, 8])
    ap.add_argument("--out", default="/tmp/encoder_memory.mp4")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from shared.io import encoder_bytes

    print("| frames | rc-lookahead | encoder peak RSS (GiB) | encoder_bytes() (GiB) | file (MB) |")
    print("|---|---|---|---|---|")
    for la in a.lookahead:
        for n in a.frames:
            base = peak_rss(CHILD.format(root=root, n=n, w=w, h=h, la=-1, out=a.out))
            enc = peak_rss(CHILD.format(root=root, n=n, w=w, h=h, la=la, out=a.out)) - base
            size = os.path.getsize(a.out) / 1e6
            print(f"| {n} | {la if la else '0 (low memory)'} | {enc:.2f} | {encoder_bytes(w, h, la) / 2**30:.2f} | "
                  f"{size:.1f} |", flush=True)
    if os.path.exists(a.out):
        os.remove(a.out)


if __name__ == "__main__":
    main()
