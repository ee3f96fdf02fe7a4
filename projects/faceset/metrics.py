"""Verification and identification metrics of chapter 2: ROC and TAR@FAR (Table 2.1, Figs. 2.3, 2.4, 2.7), LFW
10-fold accuracy (Table 2.2), IJB-C 1:N open-set TPIR@FPIR, Rank-k and CMC (Table 2.3, Figs. 2.8, 2.9).

Everything is vectorised (numpy); scores of millions of template pairs are computed in chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shared.errors import UserError

FARS = (1e-3, 1e-2, 1e-1)
FPIRS = (1e-3, 1e-2, 1e-1)
RANKS = (1, 5, 10)


def roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FAR, TAR, thresholds) for the decision "score ≥ threshold", one point per distinct score (descending
    thresholds) plus the origin (threshold +inf)."""
    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel().astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise UserError(f"a ROC needs genuine and impostor pairs (got {n_pos} genuine, {n_neg} impostor)")
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    tp, fp = np.cumsum(lab), np.cumsum(~lab)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each run of equal scores
    far = np.r_[0.0, fp[last] / n_neg]
    tar = np.r_[0.0, tp[last] / n_pos]
    return far, tar, np.r_[np.inf, s[last]]


def auc(far: np.ndarray, tar: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids)."""
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, fars: Sequence[float] = FARS,
               mode: str = "bounded") -> dict[float, float]:
    """TAR at each target FAR. ``bounded``: the highest TAR whose FAR ≤ target (a threshold one can deploy);
    ``nearest``: the TAR of the ROC point whose FAR is nearest the target (insightface's IJB scripts)."""
    far, tar, _ = roc(scores, labels)
    out = {}
    for f in fars:
        if mode == "nearest":
            out[f] = float(tar[np.argmin(np.abs(far - f))])
        elif mode == "bounded":
            out[f] = float(tar[far <= f + 1e-12].max())
        else:
            raise UserError(f"unknown TAR@FAR mode {mode!r} (bounded | nearest)")
    return out


def lfw_accuracy(scores: np.ndarray, labels: np.ndarray, folds: int = 10,
                 thresholds: np.ndarray | None = None) -> tuple[float, float, np.ndarray]:
    """LFW 10-fold protocol: contiguous folds (pairs.txt is 10 blocks of 300 + 300); for each fold the threshold
    with the best accuracy on the other nine (grid −1..1 step 0.005, first best) is applied to the held-out fold.
    Returns (mean accuracy, std, per-fold thresholds)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n = len(scores)
    if n < folds:
        raise UserError(f"{n} pairs are fewer than {folds} folds")
    th = np.arange(-1.0, 1.0, 0.005) if thresholds is None else np.asarray(thresholds, np.float64)
    correct = (scores[None, :] > th[:, None]) == labels[None, :]  # T×N
    bounds = [(i * n) // folds for i in range(folds + 1)]
    accs, best = [], []
    for i in range(folds):
        test = np.zeros(n, bool)
        test[bounds[i]:bounds[i + 1]] = True
        t = int(np.argmax(correct[:, ~test].mean(1)))
        best.append(th[t])
        accs.append(correct[t, test].mean())
    return float(np.mean(accs)), float(np.std(accs)), np.asarray(best)


def pair_scores(feats_a: torch.Tensor | np.ndarray, idx_a: np.ndarray, feats_b: torch.Tensor | np.ndarray | None,
                idx_b: np.ndarray, chunk: int = 1_000_000) -> np.ndarray:
    """Cosine similarity of rows ``feats_a[idx_a[k]]`` and ``feats_b[idx_b[k]]`` for all k, in chunks (the
    15.6M IJB-C pairs never hold more than ``chunk`` gathered rows at once)."""
    fa = F.normalize(torch.as_tensor(np.asarray(feats_a) if not torch.is_tensor(feats_a) else feats_a).float(), dim=1)
    fb = fa if feats_b is None else F.normalize(torch.as_tensor(
        np.asarray(feats_b) if not torch.is_tensor(feats_b) else feats_b).float(), dim=1)
    ia, ib = torch.as_tensor(np.asarray(idx_a), dtype=torch.long), torch.as_tensor(np.asarray(idx_b), dtype=torch.long)
    out = torch.empty(len(ia), dtype=torch.float32)
    for s in range(0, len(ia), chunk):
        out[s:s + chunk] = (fa[ia[s:s + chunk]] * fb[ib[s:s + chunk]]).sum(1)
    return out.numpy()


def similarity_matrix(probe: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor,
                      chunk: int = 4096) -> np.ndarray:
    """Cosine similarities P×G, computed in row chunks."""
    p = F.normalize(torch.as_tensor(np.asarray(probe)).float(), dim=1)
    g = F.normalize(torch.as_tensor(np.asarray(gallery)).float(), dim=1)
    return torch.cat([p[s:s + chunk] @ g.T for s in range(0, len(p), chunk)]).numpy() if len(p) else \
        np.zeros((0, len(g)), np.float32)


@dataclass
class OpenSetResult:
    """1:N open-set search against one gallery (or the mean of several, Table 2.3)."""

    tpir: dict[float, float]
    rank_hits: np.ndarray            # rank_hits[k-1] = mated probes whose mate is within the top k
    n_mated: int
    n_nonmated: int
    fpir_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tpir_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))


def open_set_search(sim: np.ndarray, probe_subjects: np.ndarray, gallery_subjects: np.ndarray,
                    fpirs: Sequence[float] = FPIRS, max_rank: int = 10,
                    curve: np.ndarray | None = None) -> OpenSetResult:
    """Open-set identification against ONE gallery (NIST / insightface ``ijb_evals``): gallery templates are
    grouped by subject (a subject's score = its best template). Probes whose subject is enrolled are mated,
    the others non-mated. Threshold at FPIR f: the (⌊f·N_nm⌋+1)-th largest non-mated top-1 score, so that at most
    ⌊f·N_nm⌋ non-mated searches score above it. TPIR(f) = fraction of mated probes whose mate is rank 1 and
    scores above the threshold."""
    sim = np.asarray(sim, np.float64)
    probe_subjects, gallery_subjects = np.asarray(probe_subjects), np.asarray(gallery_subjects)
    subjects, inv = np.unique(gallery_subjects, return_inverse=True)
    # best template score per subject: P×S
    subj = np.full((sim.shape[0], len(subjects)), -np.inf)
    if sim.size:
        np.maximum.at(subj.T, inv, sim.T)
    col = np.searchsorted(subjects, probe_subjects)
    col = np.clip(col, 0, max(len(subjects) - 1, 0))
    mated = (subjects[col] == probe_subjects) if len(subjects) else np.zeros(len(probe_subjects), bool)
    s_m, c_m = subj[mated], col[mated]
    genuine = s_m[np.arange(len(c_m)), c_m]
    others = s_m.copy()
    others[np.arange(len(c_m)), c_m] = -np.inf
    rank = 1 + (others > genuine[:, None]).sum(1)  # ties resolved in favour of the mate
    hits = np.array([(rank <= k).sum() for k in range(1, max_rank + 1)], np.int64)
    top1_nm = subj[~mated].max(1) if (~mated).any() else np.zeros(0)
    n_nm = len(top1_nm)

    def tpir_at(f: float) -> float:
        if not len(genuine):
            return float("nan")
        if n_nm == 0:
            thr = -np.inf
        else:
            desc = np.sort(top1_nm)[::-1]
            k = int(np.floor(f * n_nm + 1e-9))
            thr = desc[k] if k < n_nm else -np.inf
        return float(((rank == 1) & (genuine > thr)).mean())

    res = OpenSetResult({f: tpir_at(f) for f in fpirs}, hits, int(mated.sum()), n_nm)
    if curve is not None:
        res.fpir_curve = np.asarray(curve, np.float64)
        res.tpir_curve = np.array([tpir_at(f) for f in curve])
    return res


def combine_galleries(results: Sequence[OpenSetResult], n_probes: int) -> dict[str, float]:
    """Table 2.3 row: TPIR@FPIR averaged over the galleries (G1, G2); Rank-k = mated hits summed over galleries
    / all probes (every IJB-C probe subject is enrolled in exactly one gallery)."""
    row = {f"TPIR@FPIR {f:g}": float(np.nanmean([r.tpir[f] for r in results])) for f in results[0].tpir}
    hits = np.sum([r.rank_hits for r in results], 0)
    for k in RANKS:
        if k <= len(hits):
            row[f"Rank{k}"] = float(hits[k - 1] / max(n_probes, 1))
    return row


def cmc(results: Sequence[OpenSetResult], n_probes: int) -> np.ndarray:
    """Cumulative match characteristic: identification rate at rank 1..K over all probes."""
    return np.sum([r.rank_hits for r in results], 0) / max(n_probes, 1)


def closed_set_ranks(sim: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray,
                     max_rank: int = 10) -> np.ndarray:
    """Closed-set identification rate at ranks 1..K (all probes mated)."""
    res = open_set_search(sim, probe_labels, gallery_labels, fpirs=(), max_rank=max_rank)
    return res.rank_hits / max(len(probe_labels), 1)


# ------------------------------------------------------------------------------------------------ plots


def plot_curves(path: str | Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str,
                title: str, logx: bool = False) -> Path:
    """A PNG line plot (matplotlib, Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared.io import atomic_path

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for name, (x, y) in curves.items():
        x = np.asarray(x, np.float64)
        keep = x > 0 if logx else np.ones(len(x), bool)
        ax.plot(x[keep], np.asarray(y)[keep], label=name)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(0, 1.02))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
