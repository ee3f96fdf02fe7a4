"""Per-defect evaluation (issue 19), beside the chapter's per-block miss rate / false alarm (Eq. 1.12–1.13).

A page's detections (merged boxes, :func:`projects.printdefect.output.detections`) are matched against its ground
truth defects (``center``, ``kind`` light/dark, ``area_mm2``, peak ``delta_e``, ``visible``, ``faint``):

* a defect is **found** when its centre lies inside a detection's box; its **type** is right when the detection
  holding it (the one whose defect centre is nearest, when several hold it) has its light/dark kind
  (gray spot = light, solid spot = dark);
* a detection is a **false alarm** when its box holds no visible and no faint defect — faint = a gray spot /
  pinhole / solid spot below the visibility thresholds: a real defect, neither a miss when left out nor a false
  alarm when found (counted separately). Detections on distractors (specks, scratches) are false alarms and are
  also counted on their own.

Recall is reported over the visible defects, overall and binned by area (mm²) and contrast (peak ΔE).
"""

from __future__ import annotations

import math

from shared.report import Table

AREA_BINS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, math.inf)         # mm²
DE_BINS = (5.0, 10.0, 20.0, 40.0, math.inf)                     # peak ΔE
VISIBLE_TYPES = ("gray_spot", "pinhole", "solid_spot")


def _inside(pt, box) -> bool:
    return box[0] <= pt[0] < box[2] and box[1] <= pt[1] < box[3]


def _gap(det: dict, center) -> float:
    """Squared distance from a detection's defect centre (its box centre when it has none) to ``center``."""
    c = det.get("center") or [(det["box"][0] + det["box"][2]) / 2, (det["box"][1] + det["box"][3]) / 2]
    c = [v if v == v else 0.0 for v in c]
    return (c[0] - center[0]) ** 2 + (c[1] - center[1]) ** 2


def _faint(d: dict) -> bool:
    return bool(d.get("faint", d.get("type") in VISIBLE_TYPES and not d.get("visible")))


def match_page(dets: list[dict], defects: list[dict]) -> dict:
    """Per-defect outcome of one page: one record per visible or faint defect (kind, type, area, ΔE, visible,
    found, type_ok) and the counts of detections that are false alarms / on distractors / on faint defects."""
    records = []
    holds = [[] for _ in dets]                       # which defects each detection holds
    for gi, d in enumerate(defects):
        for di, e in enumerate(dets):
            if _inside(d["center"], e["box"]):
                holds[di].append(gi)
    for gi, d in enumerate(defects):
        if not (d.get("visible") or _faint(d)):
            continue
        hits = [e for di, e in enumerate(dets) if gi in holds[di]]
        rec = {"kind": d["kind"], "type": d["type"], "area_mm2": float(d.get("area_mm2", float("nan"))),
               "delta_e": float(d.get("delta_e", float("nan"))), "visible": bool(d.get("visible")),
               "found": bool(hits), "type_ok": None}
        if hits:
            best = min(hits, key=lambda e, c=d["center"]: _gap(e, c))
            rec["type_ok"] = best["kind"] == d["kind"]
        records.append(rec)
    false_alarms = on_distractors = on_faint = 0
    for di in range(len(dets)):
        held = [defects[g] for g in holds[di]]
        if any(d.get("visible") for d in held):
            continue
        if any(_faint(d) for d in held):
            on_faint += 1
            continue
        false_alarms += 1
        on_distractors += bool(held)
    return {"defects": records, "detections": len(dets), "false_alarms": false_alarms,
            "on_distractors": on_distractors, "on_faint": on_faint}


def _bin_label(edges: tuple[float, ...], i: int, unit: str) -> str:
    lo, hi = edges[i], edges[i + 1]
    return f"≥ {lo:g}{unit}" if math.isinf(hi) else f"{lo:g}–{hi:g}{unit}"


def _rate(found: int, total: int) -> float:
    return found / total if total else float("nan")


def summarize(pages: list[dict]) -> dict:
    """Totals over the pages of one test set (``pages`` = :func:`match_page` outputs)."""
    recs = [r for p in pages for r in p["defects"]]
    vis = [r for r in recs if r["visible"]]
    found = [r for r in vis if r["found"]]
    n = max(1, len(pages))
    out = {"pages": len(pages), "visible": len(vis), "found": len(found), "recall": _rate(len(found), len(vis)),
           "false alarms/page": sum(p["false_alarms"] for p in pages) / n,
           "on distractors/page": sum(p["on_distractors"] for p in pages) / n,
           "on faint/page": sum(p["on_faint"] for p in pages) / n,
           "type accuracy": _rate(sum(bool(r["type_ok"]) for r in found), len(found)),
           "faint found": _rate(sum(r["found"] for r in recs if not r["visible"]),
                                sum(not r["visible"] for r in recs))}
    for i in range(len(DE_BINS) - 1):
        sel = [r for r in vis if DE_BINS[i] <= r["delta_e"] < DE_BINS[i + 1]]
        out[f"recall ΔE {_bin_label(DE_BINS, i, '')}"] = _rate(sum(r["found"] for r in sel), len(sel))
    for i in range(len(AREA_BINS) - 1):
        sel = [r for r in vis if AREA_BINS[i] <= r["area_mm2"] < AREA_BINS[i + 1]]
        out[f"recall {_bin_label(AREA_BINS, i, ' mm²')}"] = _rate(sum(r["found"] for r in sel), len(sel))
    grid = {}
    for i in range(len(AREA_BINS) - 1):
        row = {}
        for j in range(len(DE_BINS) - 1):
            sel = [r for r in vis if AREA_BINS[i] <= r["area_mm2"] < AREA_BINS[i + 1]
                   and DE_BINS[j] <= r["delta_e"] < DE_BINS[j + 1]]
            row[_bin_label(DE_BINS, j, "")] = f"{sum(r['found'] for r in sel)}/{len(sel)}" if sel else ""
        grid[_bin_label(AREA_BINS, i, " mm²")] = row
    out["grid"] = grid
    out["misses"] = sorted(({"type": r["type"], "area_mm2": round(r["area_mm2"], 3),
                             "delta_e": round(r["delta_e"], 1)} for r in vis if not r["found"]),
                           key=lambda r: -r["delta_e"])
    return out


SUMMARY_COLUMNS = ["test set", "pages", "visible", "found", "recall", "false alarms/page", "type accuracy",
                   "on distractors/page", "on faint/page", "faint found"]


def tables(summaries: dict[str, dict]) -> list[Table]:
    """The per-defect tables of several test sets: totals, recall by contrast and area, the area × ΔE grid."""
    notes = ["visible: gray spot / pinhole / solid spot with peak ΔE ≥ 5 (descreened L*a*b*) and area ≥ 0.05 mm²; "
             "found: its centre inside a detection box; type accuracy over the found ones",
             "false alarm: a detection holding no visible and no faint defect (detections on specks / scratches "
             "included, also counted on their own); on faint: detections of real sub-threshold defects"]
    rows = [{"test set": k, **{c: v for c, v in s.items() if c in SUMMARY_COLUMNS}} for k, s in summaries.items()]
    out = [Table("Per-defect evaluation: recall of visible defects, false alarms per page, type accuracy",
                 SUMMARY_COLUMNS, rows, notes=notes, precision=3)]
    keys = [k for k in next(iter(summaries.values()), {}) if k.startswith("recall ") and k != "recall"]
    out.append(Table("Per-defect recall by contrast (peak ΔE) and area", ["test set", *keys],
                     [{"test set": k, **{c: s[c] for c in keys}} for k, s in summaries.items()], precision=3))
    for name, s in summaries.items():
        de_cols = [_bin_label(DE_BINS, j, "") for j in range(len(DE_BINS) - 1)]
        grid_rows = [{"area": a, **row} for a, row in s["grid"].items()]
        missed = ", ".join(f"{m['type']} {m['area_mm2']:g} mm² ΔE {m['delta_e']:g}" for m in s["misses"][:8])
        out.append(Table(f"Found / visible by area (rows) and peak ΔE (columns) — {name}", ["area", *de_cols],
                         grid_rows, notes=[f"missed (strongest first): {missed}"] if missed else []))
    return out


def score_folder(pred: dict[str, list[dict]], truth: dict[str, list[dict]]) -> dict:
    """Summary of predicted detections (page → detections) against ground truth (page → defects)."""
    return summarize([match_page(pred.get(k, []), truth[k]) for k in sorted(truth)])

