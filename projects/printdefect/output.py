"""Per-page output (Sec. 1.3): detections merged across adjacent blocks of the same type, the page feature vector
of Table 1.1, and the annotated page (white boxes: gray spots; black boxes: solid spots)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from projects.printdefect.blocks import merge_boxes

TYPES = {True: "gray_spot", False: "solid_spot"}   # light defect → gray spot, dark defect → solid spot

# Table 1.1, in order: json key → the dissertation's row label
PAGE_VECTOR = {
    "n_defects": "Number of defects on this page",
    "n_gray_spots": "Number of Gray Spots",
    "n_solid_spots": "Number of Solid Spots",
    "size_mean_mm2": "Average size (mm^2)",
    "size_max_mm2": "Max size (mm^2)",
    "size_min_mm2": "Min size (mm^2)",
    "size_std_mm2": "The standard deviation of size (mm^2)",
    "severity_mean": "Average severity",
    "severity_max": "Max severity",
    "severity_min": "Min severity",
    "y_from_center_mm": "Average y coordinate from the center of the page (mm)",
    "x_from_center_mm": "Average x coordinate from the center of the page (mm)",
}


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def detections(table: dict[str, np.ndarray], pred: np.ndarray, dpi: float) -> list[dict]:
    """Positive blocks grouped by type (light/dark) and merged by connected components (overlapping or touching
    boxes). Each detection reports the merged block box, the number of blocks, and the defect pixels' box, size,
    severity and centroid of its largest-defect block (blocks of the two grids overlap, so sizes are not summed)."""
    out: list[dict] = []
    mm2 = (25.4 / dpi) ** 2
    pos = np.asarray(pred).astype(bool)
    boxes = np.stack([table["x0"], table["y0"], table["x1"], table["y1"]], 1)
    for light, name in TYPES.items():
        idx = np.nonzero(pos & (table["light"] == light))[0]
        labels, merged = merge_boxes(boxes[idx])
        for k, box in enumerate(merged):
            members = idx[labels == k]
            best = members[np.argmax(table["size"][members])]
            dbox = [int(table[k][best]) for k in ("dx0", "dy0", "dx1", "dy1")]
            out.append({"type": name, "kind": "light" if light else "dark", "box": [int(v) for v in box],
                        "defect_box": dbox,
                        "blocks": int(len(members)), "size_px": float(table["size"][best]),
                        "size_mm2": float(table["size"][best] * mm2), "severity": _finite(table["severity"][best]),
                        "center": [float(table["cx"][best]), float(table["cy"][best])]})
    return sorted(out, key=lambda d: (d["box"][1], d["box"][0]))


def page_vector(dets: list[dict], width: int, height: int, dpi: float) -> dict[str, float | int | None]:
    """Table 1.1: counts, size statistics (mm², population std), severity statistics and the mean defect offset
    from the page centre in mm (x to the right, y downwards)."""
    sizes = np.array([d["size_mm2"] for d in dets], np.float64)
    sev = np.array([d["severity"] for d in dets if d["severity"] is not None], np.float64)
    mm = 25.4 / dpi
    cx = np.array([d["center"][0] for d in dets], np.float64)
    cy = np.array([d["center"][1] for d in dets], np.float64)

    def stat(fn, a):
        return _finite(fn(a)) if len(a) else None

    return {
        "n_defects": len(dets),
        "n_gray_spots": sum(d["type"] == "gray_spot" for d in dets),
        "n_solid_spots": sum(d["type"] == "solid_spot" for d in dets),
        "size_mean_mm2": stat(np.mean, sizes), "size_max_mm2": stat(np.max, sizes),
        "size_min_mm2": stat(np.min, sizes), "size_std_mm2": stat(np.std, sizes),
        "severity_mean": stat(np.mean, sev), "severity_max": stat(np.max, sev), "severity_min": stat(np.min, sev),
        "y_from_center_mm": stat(np.mean, (cy - height / 2) * mm) if len(dets) else None,
        "x_from_center_mm": stat(np.mean, (cx - width / 2) * mm) if len(dets) else None,
    }


def annotate(rgb: np.ndarray, dets: list[dict], dpi: float) -> np.ndarray:
    """A copy of the page with a white box around each gray spot and a black box around each solid spot."""
    img = np.ascontiguousarray(rgb.copy())
    t = max(1, int(round(3 * dpi / 600)))
    for d in dets:
        x0, y0, x1, y1 = d["box"]
        color = (255, 255, 255) if d["type"] == "gray_spot" else (0, 0, 0)
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), color, t)
    return img
