"""Pseudo-video augmentation (Section 3.4.1, Fig. 3.8): a still image + its landmarks → a "video" whose brightness,
Gaussian noise, motion blur, scale, shift, rotation and projective distortion move smoothly from a start to an end
"storyboard" state at a given fps. Landmarks follow the geometric warp exactly (no annotation noise between frames),
so the sequence measures a detector's jitter (STD/SDD, Eqs. 3.2–3.3) and trains it without intra-frame label noise.

    python -m projects.facealign.pseudo_video face.jpg face.pts out.mp4 [--fps 25] [--seconds 2] [--seed 0]
        [--strength 1] [--draw]        # a random storyboard; writes out.mp4 + out.json (per-frame landmarks)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

from projects.facealign.landmarks import apply_homography


@dataclass(frozen=True)
class Shot:
    """One storyboard state. ``gain`` multiplies intensities; ``noise`` is the Gaussian σ on [0, 1] intensities;
    ``blur`` the motion-blur length in pixels along ``blur_angle`` (degrees); ``scale``/``rotation`` (degrees) act
    about the image centre, which moves by ``shift_x``/``shift_y`` (fractions of the width/height);
    ``persp_x``/``persp_y`` are the projective terms (relative to the image size: 0.1 ≈ 10 % keystone)."""

    gain: float = 1.0
    noise: float = 0.0
    blur: float = 0.0
    blur_angle: float = 0.0
    scale: float = 1.0
    rotation: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    persp_x: float = 0.0
    persp_y: float = 0.0


def ease(t: float) -> float:
    """Smoothstep 3t² − 2t³: zero velocity at both storyboard states."""
    t = min(max(t, 0.0), 1.0)
    return t * t * (3 - 2 * t)


def interpolate(start: Shot, end: Shot, t: float) -> Shot:
    """The state at time t ∈ [0, 1] between the two storyboard states (eased)."""
    e = ease(t)
    return Shot(**{f.name: (1 - e) * getattr(start, f.name) + e * getattr(end, f.name) for f in fields(Shot)})


def homography(shot: Shot, width: int, height: int) -> np.ndarray:
    """3×3 homography of a state: centre → origin, projective keystone, rotation·scale, back to the (shifted) centre."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    persp = np.array([[1, 0, 0], [0, 1, 0], [shot.persp_x / width, shot.persp_y / height, 1.0]])
    a = math.radians(shot.rotation)
    rs = np.array([[shot.scale * math.cos(a), -shot.scale * math.sin(a), 0],
                   [shot.scale * math.sin(a), shot.scale * math.cos(a), 0], [0, 0, 1.0]])
    back = np.array([[1, 0, cx + shot.shift_x * width], [0, 1, cy + shot.shift_y * height], [0, 0, 1.0]])
    return back @ rs @ persp @ to_origin


def motion_blur_kernel(length: float, angle: float) -> np.ndarray | None:
    """A centred, normalised line kernel (None for length < 1): symmetric, so it moves no landmark."""
    if length < 1.0:
        return None
    r = int(math.ceil(length / 2))
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    a = math.radians(angle)
    for s in np.linspace(-length / 2, length / 2, 4 * r + 1):
        k[int(round(r + s * math.sin(a))), int(round(r + s * math.cos(a)))] += 1.0
    k = (k + k[::-1, ::-1]) / 2  # exact point symmetry despite rounding
    return k / k.sum()


def render(image: np.ndarray, shot: Shot, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One frame of a state: (uint8 frame, its homography)."""
    h, w = image.shape[:2]
    hm = homography(shot, w, h)
    frame = cv2.warpPerspective(image, hm, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    k = motion_blur_kernel(shot.blur, shot.blur_angle)
    if k is not None:
        frame = cv2.filter2D(frame, -1, k, borderType=cv2.BORDER_REFLECT_101)
    f = frame.astype(np.float32) / 255.0 * shot.gain
    if shot.noise > 0:
        f = f + rng.normal(0.0, shot.noise, size=f.shape).astype(np.float32)
    return (np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8), hm


def pseudo_video(image: np.ndarray, points: np.ndarray, start: Shot, end: Shot, fps: float = 25.0,
                 duration: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fig. 3.8: ``round(fps · duration)`` frames from ``start`` to ``end`` → (frames T×H×W×3 uint8,
    landmarks T×N×2 — the originals under each frame's homography —, homographies T×3×3)."""
    n = max(2, int(round(fps * duration)))
    rng = np.random.default_rng(seed)
    frames, pts, hms = [], [], []
    for i in range(n):
        frame, hm = render(image, interpolate(start, end, i / (n - 1)), rng)
        frames.append(frame)
        hms.append(hm)
        pts.append(apply_homography(hm, points))
    return np.stack(frames), np.stack(pts).astype(np.float32), np.stack(hms)


def random_storyboard(rng: np.random.Generator, strength: float = 1.0) -> tuple[Shot, Shot]:
    """Random start/end states (``strength`` scales every range; 0 gives two identity states)."""

    def one() -> Shot:
        u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
        return Shot(gain=1 + strength * u(-0.35, 0.25), noise=strength * u(0, 0.04), blur=strength * u(0, 5),
                    blur_angle=u(0, 180), scale=1 + strength * u(-0.12, 0.12), rotation=strength * u(-8, 8),
                    shift_x=strength * u(-0.05, 0.05), shift_y=strength * u(-0.05, 0.05),
                    persp_x=strength * u(-0.12, 0.12), persp_y=strength * u(-0.12, 0.12))

    return one(), one()


def still(shot: Shot | None = None, **changes) -> Shot:
    """A state for storyboards written by hand: ``still(gain=0.7, noise=0.02)``."""
    return replace(shot or Shot(), **changes)


def main(argv: list[str] | None = None) -> int:
    """Fig. 3.8 from the command line: one image + its ``.pts`` → a pseudo-video and its exact landmarks."""
    from pathlib import Path

    from projects.facealign.landmarks import read_pts
    from shared.errors import UserError, report
    from shared.io import atomic_write_text, read_image, write_video

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", type=Path)
    ap.add_argument("pts", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--draw", action="store_true", help="draw the landmarks into the frames")
    args = ap.parse_args(argv)
    try:
        img, pts = read_image(args.image), read_pts(args.pts)
        start, end = random_storyboard(np.random.default_rng(args.seed), args.strength)
        frames, warped, _ = pseudo_video(img, pts, start, end, args.fps, args.seconds, args.seed)
        if args.draw:
            for f, p in zip(frames, warped):
                for x, y in p:
                    cv2.circle(f, (int(round(x * 16)), int(round(y * 16))), 32, (0, 255, 0), -1, cv2.LINE_AA, 4)
        write_video(args.out, frames, fps=args.fps)
        atomic_write_text(args.out.with_suffix(".json"), json.dumps(
            {"start": start.__dict__, "end": end.__dict__, "fps": args.fps,
             "points": np.round(warped, 3).tolist()}) + "\n")
    except UserError as exc:
        return report(exc)
    print(f"{len(frames)} frames written to {args.out} (+ {args.out.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
