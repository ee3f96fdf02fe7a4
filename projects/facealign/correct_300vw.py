"""Annotation correction for 300-VW (Section 3.3.2, Fig. 3.7): treat each video's annotations as the detections and
fuse them with Lucas–Kanade tracks (Eq. 3.12), then write the corrected ``.pts`` in the same layout.

    python -m projects.facealign.correct_300vw <300VW root> <output root> [--ids 114 124 …] [--tau-fwd 0.12]

Writes ``<output root>/<id>/annot/%06d.pts`` (1-based, as the originals; the videos are not copied) and prints per
video the mean correction and the frame-to-frame jitter (mean ‖p_{t+1} − 2 p_t + p_{t−1}‖ / d) before and after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from projects.facealign.fusion import FlowFusion
from projects.facealign.landmarks import inter_ocular, read_pts, write_pts
from projects.facealign.metrics import jitter
from shared.errors import UserError, report
from shared.io import iter_video
from shared.outputs import check_output


def correct_video(video_dir: Path, out_dir: Path, fusion: FlowFusion) -> tuple[float, float, float]:
    """Correct one ``<id>/`` folder; returns (mean correction / d, jitter before, jitter after). The video is decoded
    one frame at a time (a 300-VW video of 3,000 frames never sits in memory)."""
    annots = sorted((video_dir / "annot").glob("*.pts"), key=lambda p: int(p.stem))
    if not annots:
        raise UserError(f"no annotations in {video_dir / 'annot'}")
    numbers = [int(p.stem) for p in annots]
    pts = np.stack([read_pts(p) for p in annots]).astype(np.float64)
    wanted = dict(zip(numbers, range(len(numbers))))
    online, fused = fusion.online(), []
    for k, frame in enumerate(iter_video(video_dir / "vid.avi", max_frames=numbers[-1]), start=1):
        if k in wanted:
            fused.append(online.update(frame, pts[wanted[k]])[0])
    if len(fused) < len(numbers):
        raise UserError(f"{video_dir}: annotation {numbers[-1]} but the video has fewer frames")
    fused = np.stack(fused)
    for k, p in zip(numbers, fused):
        write_pts(out_dir / "annot" / f"{k:06d}.pts", p)
    moved = float((np.linalg.norm(fused - pts, axis=-1) / inter_ocular(pts)[:, None]).mean())
    return moved, jitter(pts), jitter(fused)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--ids", nargs="*", default=None)
    ap.add_argument("--tau-fwd", type=float, default=0.12, help="~4x the annotation jitter (fraction of d)")
    ap.add_argument("--tau-fb", type=float, default=0.02)
    args = ap.parse_args(argv)
    try:
        if not args.root.is_dir():
            raise UserError(f"300-VW root not found: {args.root}")
        check_output(args.out, [args.root], folder=True)  # never over the original annotations
        ids = args.ids or sorted(p.name for p in args.root.iterdir() if (p / "vid.avi").is_file())
        if not ids:
            raise UserError(f"no <id>/vid.avi under {args.root}")
        fusion = FlowFusion(tau_fwd=args.tau_fwd, tau_fb=args.tau_fb)
        print("| video | mean correction (/d) | jitter before | jitter after |\n|---|---|---|---|")
        for vid in ids:
            moved, before, after = correct_video(args.root / vid, args.out / vid, fusion)
            print(f"| {vid} | {moved:.4f} | {before:.4f} | {after:.4f} |")
    except UserError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
