"""The single-face IJB-C subset of Table 2.1 ("a small subset out of IJB-C with 15,000 pairs of faces", Sec. 2.2.1):
the dissertation does not publish its pairs, so this makes one by a documented, seeded rule from the original meta
files — half genuine, half impostor template pairs drawn uniformly from ``ijbc_template_pair_label.txt`` without
replacement, one face drawn uniformly from each template (``ijbc_face_tid_mid.txt``):

    python -m projects.faceset.ijbc_subset <IJBC root> <out.txt> [--pairs 15000] [--seed 0]

writes ``image1 image2 label`` lines (image names under ``loose_crop/``), the ``pairs`` test-set layout
(``data=table2_1``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from projects.faceset import ijbc
from shared.errors import UserError, report
from shared.io import atomic_write_text
from shared.outputs import check_output


def sample_pairs(names: list[str], tids: np.ndarray, t1: np.ndarray, t2: np.ndarray, labels: np.ndarray,
                 n_pairs: int = 15000, seed: int = 0) -> list[tuple[str, str, int]]:
    """``n_pairs`` single-face pairs: ⌈n/2⌉ genuine and ⌊n/2⌋ impostor template pairs (uniform, without
    replacement, in that order of the generator), then one face per template (uniform)."""
    rng = np.random.default_rng(seed)
    faces: dict[int, list[int]] = {}
    for i, t in enumerate(tids.tolist()):
        faces.setdefault(t, []).append(i)
    usable = np.array([a in faces and b in faces for a, b in zip(t1.tolist(), t2.tolist())], bool)
    out = []
    for label, count in ((True, (n_pairs + 1) // 2), (False, n_pairs // 2)):
        pool = np.nonzero(usable & (labels == label))[0]
        if len(pool) < count:
            raise UserError(f"only {len(pool)} {'genuine' if label else 'impostor'} template pairs, {count} wanted")
        for k in rng.choice(pool, count, replace=False):
            a, b = faces[int(t1[k])], faces[int(t2[k])]
            out.append((names[a[rng.integers(len(a))]], names[b[rng.integers(len(b))]], int(label)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m projects.faceset.ijbc_subset", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="IJB-C root (meta/ and loose_crop/)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--pairs", type=int, default=15000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        check_output(args.out, [args.root / "meta"], folder=False)
        names, tids, _ = ijbc.read_face_tid_mid(args.root / "meta" / "ijbc_face_tid_mid.txt")
        t1, t2, labels = ijbc.read_template_pairs(args.root / "meta" / "ijbc_template_pair_label.txt")
        pairs = sample_pairs(names, tids, t1, t2, labels, args.pairs, args.seed)
        atomic_write_text(args.out, "".join(f"{a} {b} {lab}\n" for a, b, lab in pairs))
    except UserError as exc:
        return report(exc)
    print(f"{len(pairs)} pairs ({sum(p[2] for p in pairs)} genuine) written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
