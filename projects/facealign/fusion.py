"""Detection + optical-flow fusion (Section 3.3.2, Eq. 3.12, Fig. 3.5), a post-processor over any detector's
per-frame landmarks (and the annotation-correction tool for 300-VW when the "detector" is the annotation).

For frame t the landmarks of frame t−1 are tracked to t with pyramidal Lucas–Kanade (forward projection F_t^t) and
back again (F_t^{t−1}); per landmark

    d_fwd = ‖F(p_{t−1}) − p_det,t‖ / d,      e_fb = ‖F⁻¹(F(p_{t−1})) − p_{t−1}‖ / d      (d: inter-ocular distance)
    α = clip(1 − exp(−(d_fwd/τ_fwd)² − (e_fb/τ_fb)²), α_min, 1)
    P = α · P_detection + (1 − α) · P_tracking                                                   (Eq. 3.12)

so a track that agrees with the detection and is forward–backward consistent gets the weight (smooth output), and a
track that drifts (blinks, occlusion) or fails hands the point back to the detector. This is the direction of Fig.
3.5's caption; the chapter's text ("the larger the distances, the smaller the value of α", α the detection weight)
says the opposite, which would trust a track more the further it drifts — see the README ("Eq. 3.12").

τ_fwd should be a few times the detector's per-frame jitter (in units of d): too small and the detector's noise
passes through, too large and the tracks may lag real motion the flow misses (e.g. contour points sliding over a
static background).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from projects.facealign.landmarks import inter_ocular


def to_gray(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB (or gray) frame → uint8 gray."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        return np.ascontiguousarray(frame, dtype=np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2GRAY)


@dataclass
class FlowFusion:
    """Eq. 3.12 over a sequence. ``track_from``: ``fused`` tracks the previous fused landmarks (a recursive
    filter: stronger smoothing) or ``detection`` tracks the previous raw detections (Fig. 3.5 literally)."""

    win: int = 21
    levels: int = 3
    tau_fwd: float = 0.06
    tau_fb: float = 0.02
    alpha_min: float = 0.05
    track_from: str = "fused"

    def __post_init__(self) -> None:
        if self.track_from not in ("fused", "detection"):
            raise ValueError(f"track_from must be 'fused' or 'detection', got {self.track_from!r}")

    def track(self, prev: np.ndarray, cur: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forward LK track of ``pts`` from gray ``prev`` to ``cur`` and back: (tracked, back-projected, ok)."""
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
        kw = dict(winSize=(self.win, self.win), maxLevel=self.levels, criteria=crit)
        p0 = np.ascontiguousarray(pts, dtype=np.float32).reshape(-1, 1, 2)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, **kw)
        p2, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, **kw)
        h, w = cur.shape[:2]
        p1, p2 = p1.reshape(-1, 2).astype(np.float64), p2.reshape(-1, 2).astype(np.float64)
        inside = (p1[:, 0] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= h - 1)
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & inside & np.isfinite(p1).all(1) & np.isfinite(p2).all(1)
        return p1, p2, ok

    def alpha(self, tracked: np.ndarray, back: np.ndarray, prev_pts: np.ndarray, det: np.ndarray,
              ok: np.ndarray) -> np.ndarray:
        """Per-landmark detection weight α from the forward-projection distance and the forward–backward error."""
        d = max(float(inter_ocular(det)), 1e-6)
        d_fwd = np.linalg.norm(tracked - det, axis=-1) / d
        e_fb = np.linalg.norm(back - prev_pts, axis=-1) / d
        a = 1.0 - np.exp(-(d_fwd / self.tau_fwd) ** 2 - (e_fb / self.tau_fb) ** 2)
        a = np.clip(a, self.alpha_min, 1.0)
        return np.where(ok, a, 1.0)

    def step(self, prev_gray: np.ndarray, gray: np.ndarray, prev_pts: np.ndarray, det: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
        """One frame: (fused landmarks, α)."""
        det = np.asarray(det, dtype=np.float64)
        tracked, back, ok = self.track(prev_gray, gray, prev_pts)
        a = self.alpha(tracked, back, np.asarray(prev_pts, dtype=np.float64), det, ok)
        tracked = np.where(ok[:, None], tracked, det)
        return a[:, None] * det + (1 - a[:, None]) * tracked, a

    def online(self) -> OnlineFusion:
        """A frame-at-a-time fuser (videos decoded as a stream: memory does not grow with the length)."""
        return OnlineFusion(self)

    def __call__(self, frames, detections: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fuse a whole sequence: frames T×H×W(×3) uint8 (or any iterable of them), detections T×N×2 → (fused
        T×N×2, α T×N; α₀ = 1)."""
        detections = np.asarray(detections, dtype=np.float64)
        if hasattr(frames, "__len__") and len(frames) != len(detections):
            raise ValueError(f"{len(frames)} frames but {len(detections)} landmark sets")
        online, fused, alphas = self.online(), [], []
        for frame, det in zip(frames, detections, strict=True):
            p, a = online.update(frame, det)
            fused.append(p)
            alphas.append(a)
        return np.stack(fused).astype(np.float32), np.stack(alphas)


class OnlineFusion:
    """Eq. 3.12 one frame at a time: ``update(frame, detection)`` → (fused landmarks, α); the first frame passes the
    detection through (α = 1)."""

    def __init__(self, fusion: FlowFusion) -> None:
        self.fusion = fusion
        self.prev_gray: np.ndarray | None = None
        self.prev_src: np.ndarray | None = None

    def update(self, frame: np.ndarray, detection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        det = np.asarray(detection, dtype=np.float64)
        gray = to_gray(frame)
        if self.prev_gray is None:
            fused, a = det, np.ones(len(det))
        else:
            fused, a = self.fusion.step(self.prev_gray, gray, self.prev_src, det)
        self.prev_gray = gray
        self.prev_src = fused if self.fusion.track_from == "fused" else det
        return fused, a
