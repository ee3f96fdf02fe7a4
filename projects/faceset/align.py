"""Align a folder tree of face photos (Sec. 2.2.1): MTCNN 5 points of the largest face → similarity warp onto the
SphereFace 112×96 (or ArcFace 112×112) template; the tree is mirrored under the output folder as PNG crops, and
``alignment.tsv`` records per image whether landmarks were found (the flag Table 2.1's policies act on) and the
5 points.

    python -m projects.faceset.align <src> <dst> [--template sphereface|arcface] [--undetected unaligned|skip]
                                     [--mtcnn-dir DIR] [--thresholds 0.6 0.7 0.9] [--min-score 0.0]

MTCNN's weights: ``--mtcnn-dir`` or the asset copy (``make assets``); its stage thresholds default to SphereFace's
preprocessing (0.6/0.7/0.9), the pipeline chapter 2 follows.

Faces MTCNN cannot find are written as unaligned centre crops (``--undetected unaligned``, needed for Table 2.1
settings 2–4) or left out (``skip``, setting 1). A user mistake ends with one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from projects.faceset.data import FaceAligner, get_mtcnn
from shared.errors import UserError, report
from shared.face.mtcnn import SPHEREFACE_THRESHOLDS
from shared.io import IMAGE_EXTS, atomic_write_text, list_files, read_image, write_image
from shared.outputs import check_output, each_input, raise_failures


def align_tree(src: Path, dst: Path, template: str = "sphereface", undetected: str = "unaligned",
               mtcnn_dir: str | Path | None = None, min_score: float = 0.0, progress: bool = True,
               thresholds: tuple[float, float, float] = SPHEREFACE_THRESHOLDS) -> dict:
    """Align every image under ``src`` into ``dst`` (same relative paths, ``.png``); returns counts."""
    if undetected not in ("unaligned", "skip"):
        raise UserError(f"--undetected must be unaligned or skip, got {undetected!r}")
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise UserError(f"input not found: {src}")
    check_output(dst, [src], folder=True)
    files = list_files(src, IMAGE_EXTS)
    if not files:
        raise UserError(f"no images under {src}")
    get_mtcnn(mtcnn_dir, thresholds)  # fail early on missing weights
    aligner = FaceAligner(template, detect=True, mtcnn_dir=str(mtcnn_dir) if mtcnn_dir else None,
                          thresholds=thresholds, assume_aligned=False, min_score=min_score)
    rows, counts = ["image\tdetected\t" + "\t".join(f"{a}{i}" for i in range(1, 6) for a in "xy")], dict(
        images=len(files), detected=0, written=0)
    def one(f: Path) -> None:
        rel = f.relative_to(src) if src.is_dir() else Path(f.name)
        img = read_image(f)
        pts = aligner.landmarks(img, None)
        if pts is not None:
            from shared.face.align import align_face

            crop = align_face(img, pts, template)[0]
            counts["detected"] += 1
        elif undetected == "skip":
            rows.append(f"{rel}\t0" + "\tnan" * 10)
            return
        else:
            crop = aligner.unaligned(img)
        write_image(dst / rel.with_suffix(".png"), crop)
        counts["written"] += 1
        coords = "\t".join(f"{v:.2f}" for v in (pts.ravel() if pts is not None else np.full(10, np.nan)))
        rows.append(f"{rel.with_suffix('.png')}\t{int(pts is not None)}\t{coords}")

    failures = each_input(files, one, progress="aligning" if progress else None, unit="img")
    atomic_write_text(dst / "alignment.tsv", "\n".join(rows) + "\n")
    raise_failures(failures, len(files))
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m projects.faceset.align", description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--template", default="sphereface", choices=["sphereface", "arcface"])
    ap.add_argument("--undetected", default="unaligned", choices=["unaligned", "skip"])
    ap.add_argument("--mtcnn-dir", default=None, help="folder with pnet.pt rnet.pt onet.pt (default: asset cache)")
    ap.add_argument("--thresholds", type=float, nargs=3, default=list(SPHEREFACE_THRESHOLDS),
                    help="MTCNN stage thresholds (default: SphereFace's 0.6 0.7 0.9)")
    ap.add_argument("--min-score", type=float, default=0.0)
    args = ap.parse_args(argv)
    try:
        counts = align_tree(Path(args.src), Path(args.dst), args.template, args.undetected, args.mtcnn_dir,
                            args.min_score, thresholds=tuple(args.thresholds))
    except UserError as exc:
        return report(exc)
    print(f"{counts['detected']} of {counts['images']} images aligned, {counts['written']} crops written to "
          f"{args.dst} (alignment.tsv lists the landmarks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
