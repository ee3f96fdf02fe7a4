"""Validation carved out of the training data (never a test set), shared by the face projects (chapters 2 and 3):
the seeded holdout rule and the check that no validation file is, by path or by content, a test file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from shared.errors import UserError


def seeded_holdout(items: list, count: int, seed: int = 0, what: str = "items") -> tuple[list, list]:
    """The rule: sort ``items`` (so the file system's listing order does not matter), permute their indices with
    ``numpy.random.default_rng(seed)``, the first ``count`` are held out → (kept, held out), both sorted."""
    items = sorted(items)
    if count <= 0:
        return items, []
    if count >= len(items):
        raise UserError(f"holding out {count} {what} would leave none to train on (there are {len(items)})")
    pick = set(np.random.default_rng(seed).permutation(len(items))[:count].tolist())
    return [x for k, x in enumerate(items) if k not in pick], [x for k, x in enumerate(items) if k in pick]


def content_overlap(a: list[Path], b: list[Path]) -> list[Path]:
    """Files of ``a`` whose bytes equal a file of ``b`` (file sizes first; SHA-1 only of equal-sized files)."""
    def sha(f: Path) -> str:
        return hashlib.sha1(Path(f).read_bytes()).hexdigest()

    sizes: dict[int, list[Path]] = {}
    for f in b:
        sizes.setdefault(Path(f).stat().st_size, []).append(Path(f))
    hashes: dict[int, set[str]] = {}
    out = []
    for f in a:
        size = Path(f).stat().st_size
        if size in sizes:
            if size not in hashes:
                hashes[size] = {sha(g) for g in sizes[size]}
            if sha(f) in hashes[size]:
                out.append(Path(f))
    return out


def check_disjoint(validation: list[Path], tests: dict[str, list[Path]], training: list[Path] = ()) -> None:
    """A :class:`UserError` when a validation file is a test file (same path or same bytes), or a training file is
    a test file (same path)."""
    resolved = lambda files: {Path(f).resolve() for f in files}  # noqa: E731
    val_r, train_r = resolved(validation), resolved(training)
    for name, files in tests.items():
        test_r = resolved(files)
        for what, mine in (("validation", val_r), ("training", train_r)):
            both = mine & test_r
            if both:
                raise UserError(f"{len(both)} {what} file(s) are in test set {name!r} (e.g. {sorted(both)[0]}): "
                                "a test set is never trained or validated on")
        same = content_overlap(sorted(val_r), sorted(test_r))
        if same:
            raise UserError(f"{len(same)} validation file(s) have the same content as files of test set {name!r} "
                            f"(e.g. {same[0]})")
