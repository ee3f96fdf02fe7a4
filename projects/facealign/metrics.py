"""Accuracy and stability of 68-point landmarks (Ch. 3 "Metrics"): NME (Eq. 3.1), STD (Eq. 3.2), SDD (Eq. 3.3),
CED curve / AUC / failure rate, and the chapter's plots — per-landmark bars with error bars (Fig. 3.3), 2-D noise
histograms (Fig. 3.4) and SDD comparison bars (Fig. 3.10) — written as PNG files.

Arrays are numpy, shapes (..., 68, 2) for one face and (n_frames, 68, 2) for a track.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from projects.facealign.landmarks import inter_ocular, inter_pupil
from shared.errors import UserError
from shared.io import atomic_path

NORMS = ("ocular", "pupil")


def normaliser(gt: np.ndarray, norm: str = "ocular") -> np.ndarray:
    """d of Eq. 3.1 from the ground truth: outer-ocular ‖p36 − p45‖ or inter-pupil distance."""
    if norm == "ocular":
        return inter_ocular(gt)
    if norm == "pupil":
        return inter_pupil(gt)
    raise UserError(f"unknown NME normalisation {norm!r} (ocular | pupil)")


def nme(pred: np.ndarray, gt: np.ndarray, norm: str = "ocular") -> np.ndarray:
    """Eq. 3.1 per face: mean over the N points of ‖pred_i − gt_i‖₂, divided by d. Shapes (..., N, 2) → (...)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ")
    return np.linalg.norm(pred - gt, axis=-1).mean(-1) / normaliser(gt, norm)


def std_metric(track: np.ndarray, d: float | None = None) -> np.ndarray:
    """Eq. 3.2: per-coordinate sample standard deviation (n − 1) of the points over the frames of a static face,
    divided by d (default: the mean outer-ocular distance of the track). (n, N, 2) → (N, 2)."""
    track = np.asarray(track, dtype=np.float64)
    if track.ndim != 3 or track.shape[0] < 2:
        raise ValueError(f"STD needs a track of shape (n ≥ 2, N, 2), got {track.shape}")
    d = float(inter_ocular(track).mean()) if d is None else float(d)
    return track.std(axis=0, ddof=1) / d


def sdd(pred: np.ndarray, gt: np.ndarray, per_frame: bool = True) -> np.ndarray:
    """Eq. 3.3: STD of Δy_i = pred_i − gt_i over the frames. Each Δy_i is divided by its frame's outer-ocular
    distance (``per_frame``; a face that changes size is still comparable) or all by the mean one. → (N, 2)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[0] < 2:
        raise ValueError(f"SDD needs two tracks of the same shape (n ≥ 2, N, 2), got {pred.shape}, {gt.shape}")
    d = inter_ocular(gt)
    delta = (pred - gt) / (d[:, None, None] if per_frame else d.mean())
    return delta.std(axis=0, ddof=1)


def jitter(track: np.ndarray, per_landmark: bool = False) -> float | np.ndarray:
    """Frame-to-frame jitter of a track (label-free): the mean over frames t of the second difference
    ‖p_{t+1} − 2·p_t + p_{t−1}‖ / d_t (d_t: the track's own outer-ocular distance at t), over all points — zero for
    points moving at constant velocity, large for points that shake. ``per_landmark``: the (N, 2) mean |Δ²| / d_t per
    coordinate instead (Fig. 3.10-style bars). A track of < 3 frames has no second difference: 0."""
    track = np.asarray(track, dtype=np.float64)
    if track.ndim != 3 or track.shape[-1] != 2:
        raise ValueError(f"jitter needs a track of shape (n, N, 2), got {track.shape}")
    if len(track) < 3:
        return np.zeros(track.shape[1:]) if per_landmark else 0.0
    acc = (track[2:] - 2 * track[1:-1] + track[:-2]) / np.maximum(inter_ocular(track[1:-1]), 1e-12)[:, None, None]
    return np.abs(acc).mean(0) if per_landmark else float(np.linalg.norm(acc, axis=-1).mean())


def noise(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The per-frame detection noise Δy_i / d_i (what Figs. 3.3 and 3.4 plot). (n, N, 2) → (n, N, 2)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    return (pred - gt) / inter_ocular(gt)[:, None, None]


def ced(errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Cumulative error distribution: the fraction of faces with NME ≤ t for each threshold t."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    return (e[None, :] <= np.asarray(thresholds, dtype=np.float64)[:, None]).mean(1)


def auc(errors: np.ndarray, limit: float = 0.08) -> float:
    """Area under the CED curve on [0, limit], divided by limit (exact: ∫₀ᵀ 1[e ≤ t] dt = max(0, T − e))."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    return float(np.clip(limit - e, 0.0, None).mean() / limit)


def failure_rate(errors: np.ndarray, threshold: float = 0.08) -> float:
    """Fraction of faces with NME above ``threshold`` (0.08 / 0.10 in the literature)."""
    return float((np.asarray(errors, dtype=np.float64).ravel() > threshold).mean())


# ------------------------------------------------------------------------------------------------ plots


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_landmark_bars(noise_track: np.ndarray, path: str | Path, title: str = "detection noise") -> Path:
    """Fig. 3.3: per landmark, the mean of Δy/d in X (blue) and Y (red) as bars, their SDD as error bars."""
    plt = _pyplot()
    z = np.asarray(noise_track, dtype=np.float64)
    mean, sd = z.mean(0), z.std(0, ddof=1)
    idx = np.arange(1, z.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(14, 4))
    ax.bar(idx - 0.2, mean[:, 0], 0.4, yerr=sd[:, 0], color="tab:blue", label="X", capsize=1.5)
    ax.bar(idx + 0.2, mean[:, 1], 0.4, yerr=sd[:, 1], color="tab:red", label="Y", capsize=1.5)
    ax.set(xlabel="landmark (1-based)", ylabel="Δ / d", title=title, xlim=(0, len(idx) + 1))
    ax.axhline(0, color="k", lw=0.5)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_noise_histograms(noise_track: np.ndarray, path: str | Path, bins: int = 15, extent: float | None = None
                          ) -> Path:
    """Fig. 3.4: one 2-D histogram of (ΔX, ΔY)/d per landmark, centred on zero."""
    plt = _pyplot()
    z = np.asarray(noise_track, dtype=np.float64)
    n = z.shape[1]
    r = extent or float(np.abs(z).max() or 1.0)
    cols = 10
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.3))
    for k, ax in enumerate(np.ravel(axes)):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        ax.hist2d(z[:, k, 0], z[:, k, 1], bins=bins, range=[[-r, r], [-r, r]], cmap="viridis")
        ax.set_title(str(k + 1), fontsize=7, pad=1)
    fig.tight_layout(pad=0.2)
    return _save(fig, path)


def plot_sdd_bars(sdds: Mapping[str, np.ndarray], path: str | Path, ylabel: str = "SDD") -> Path:
    """Fig. 3.10: SDD (or another per-landmark stability measure, ``ylabel``) per landmark for several models, X (top)
    and Y (bottom)."""
    plt = _pyplot()
    if not sdds:
        raise ValueError("no SDD arrays to plot")
    fig, axes = plt.subplots(2, 1, figsize=(14, 6), sharex=True)
    width = 0.8 / len(sdds)
    for j, (name, s) in enumerate(sdds.items()):
        s = np.asarray(s)
        idx = np.arange(1, s.shape[0] + 1) - 0.4 + (j + 0.5) * width
        for c, ax in enumerate(axes):
            ax.bar(idx, s[:, c], width, label=name)
    for c, ax in enumerate(axes):
        ax.set(ylabel=f"{ylabel} ({'XY'[c]})")
        ax.legend(fontsize=7)
    axes[1].set_xlabel("landmark (1-based)")
    fig.tight_layout()
    return _save(fig, path)


def plot_ced(curves: Mapping[str, np.ndarray], path: str | Path, limit: float = 0.08) -> Path:
    """CED curves (fraction of faces vs NME) for several test sets or models."""
    plt = _pyplot()
    t = np.linspace(0, limit, 101)
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, errors in curves.items():
        ax.plot(t, ced(errors, t), label=f"{name} (AUC {auc(errors, limit):.3f})")
    ax.set(xlabel="NME", ylabel="fraction of faces", xlim=(0, limit), ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
