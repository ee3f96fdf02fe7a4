"""IJB-C meta files (the formats of insightface's ``IJBC/meta``) and the media-then-template feature aggregation.

* ``ijbc_face_tid_mid.txt`` — ``image_name template_id media_id`` per face image (space separated);
* ``ijbc_template_pair_label.txt`` — ``tid1 tid2 label`` (1 genuine, 0 impostor), 15.6M rows in the original;
* ``ijbc_name_5pts_score.txt`` — ``image_name x1 y1 … x5 y5 faceness`` (loose-crop pixel coordinates);
* ``ijbc_1N_gallery_G1.csv``, ``ijbc_1N_gallery_G2.csv``, ``ijbc_1N_probe_mixed.csv`` — comma separated with a
  header, column 0 TEMPLATE_ID, column 1 SUBJECT_ID, one row per image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import UserError


def _require(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"IJB-C meta file not found: {path}")
    return path


def _rows(path: Path, min_cols: int, sep: str | None = None) -> list[list[str]]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(sep) if sep else line.split()
        if len(parts) < min_cols:
            raise UserError(f"{path}:{n}: expected at least {min_cols} fields, got {len(parts)}")
        rows.append(parts)
    return rows


def read_face_tid_mid(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``ijbc_face_tid_mid.txt`` → (image names, template ids, media ids)."""
    path = _require(path)
    rows = _rows(path, 3)
    try:
        tids = np.array([int(r[1]) for r in rows], np.int64)
        mids = np.array([int(r[2]) for r in rows], np.int64)
    except ValueError as exc:
        raise UserError(f"{path}: template/media ids must be integers ({exc})") from exc
    return [r[0] for r in rows], tids, mids


def read_template_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ijbc_template_pair_label.txt`` → (tid1, tid2, label) — parsed by numpy in one pass (15.6M rows)."""
    path = _require(path)
    try:
        flat = np.fromfile(path, dtype=np.int64, sep=" ")
    except ValueError as exc:
        raise UserError(f"{path}: not a list of integer triples ({exc})") from exc
    n_lines = sum(1 for line in path.open() if line.strip())
    if flat.size != 3 * n_lines:
        raise UserError(f"{path}: expected 'tid1 tid2 label' integer triples on {n_lines} lines, parsed {flat.size} "
                        "numbers")
    t = flat.reshape(-1, 3)
    if not np.isin(t[:, 2], (0, 1)).all():
        raise UserError(f"{path}: labels must be 0 or 1")
    return t[:, 0], t[:, 1], t[:, 2].astype(bool)


def read_5pts(path: str | Path) -> dict[str, tuple[np.ndarray, float]]:
    """``ijbc_name_5pts_score.txt`` → {image name: (5×2 points, faceness score)}."""
    path = _require(path)
    out = {}
    for r in _rows(path, 12):
        try:
            vals = np.array([float(v) for v in r[1:12]])
        except ValueError as exc:
            raise UserError(f"{path}: bad number in the row of {r[0]} ({exc})") from exc
        out[r[0]] = (vals[:10].reshape(5, 2), float(vals[10]))
    return out


def read_1n_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A 1:N gallery/probe csv → (template ids, subject ids), one entry per template (header skipped)."""
    path = _require(path)
    rows = _rows(path, 2, sep=",")[1:]
    try:
        tids = np.array([int(r[0]) for r in rows], np.int64)
        sids = np.array([int(r[1]) for r in rows], np.int64)
    except ValueError as exc:
        raise UserError(f"{path}: TEMPLATE_ID and SUBJECT_ID must be integers ({exc})") from exc
    uniq, first = np.unique(tids, return_index=True)
    subj = sids[first]
    inv = np.searchsorted(uniq, tids)
    if (subj[inv] != sids).any():
        raise UserError(f"{path}: a template lists more than one SUBJECT_ID")
    return uniq, subj


def media_template_features(feats: torch.Tensor | np.ndarray, tids: np.ndarray, mids: np.ndarray,
                            aggregate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                            normalize: bool = True, chunk: int = 256) -> tuple[np.ndarray, torch.Tensor]:
    """Media-then-template pooling: faces of one (template, media) are averaged (video frames → one vector),
    then a template's media vectors are pooled — summed and L2-normalised (insightface baseline) when
    ``aggregate`` is None, otherwise by ``aggregate(B×N×D, mask)`` (the multi-column network, Eq. 2.1) on padded
    chunks of templates. Returns (sorted template ids, T×D L2-normalised template features)."""
    x = torch.as_tensor(np.asarray(feats) if not torch.is_tensor(feats) else feats).float()
    if normalize:
        x = F.normalize(x, dim=1)
    keys, inv = np.unique(np.stack([tids, mids], 1), axis=0, return_inverse=True)
    inv = torch.as_tensor(inv.ravel())
    media = torch.zeros(len(keys), x.shape[1]).index_add_(0, inv, x)
    media /= torch.bincount(inv, minlength=len(keys)).clamp_min(1)[:, None].float()
    templates, t_inv = np.unique(keys[:, 0], return_inverse=True)
    t_inv = t_inv.ravel()
    if aggregate is None:
        out = torch.zeros(len(templates), x.shape[1]).index_add_(0, torch.as_tensor(t_inv), media)
        return templates, F.normalize(out, dim=1)
    # keys are sorted by template, so each template's media are contiguous
    counts = np.bincount(t_inv, minlength=len(templates))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    order = np.argsort(counts, kind="stable")  # similar sizes in one chunk → little padding
    out = torch.zeros(len(templates), x.shape[1])
    for s in range(0, len(order), chunk):
        sel = order[s:s + chunk]
        nmax = int(counts[sel].max())
        pos = np.arange(nmax)
        valid = pos[None, :] < counts[sel][:, None]
        rows = np.where(valid, starts[sel][:, None] + pos[None, :], 0)
        batch = media[torch.as_tensor(rows)]
        out[torch.as_tensor(sel)] = aggregate(batch, torch.as_tensor(valid)).float()
    return templates, F.normalize(out, dim=1)


def template_index(template_ids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    """Rows of ``wanted`` template ids in the sorted ``template_ids`` (UserError naming unknown ones)."""
    idx = np.searchsorted(template_ids, wanted)
    idx = np.clip(idx, 0, len(template_ids) - 1)
    bad = template_ids[idx] != wanted
    if bad.any():
        raise UserError(f"{what}: {int(bad.sum())} template id(s) have no faces, e.g. {int(wanted[bad][0])}")
    return idx
