"""Gallery/probe inference: align (MTCNN, Sec. 2.2.1), embed, aggregate each set (Eq. 2.1), rank the gallery
identities by cosine similarity, and decide same/different at a threshold.

A set is an identity folder, a folder of images, an image, a list of images — or a video: its faces are detected
(MTCNN every ``video_stride``-th frame), linked into tracks by box overlap (:func:`link_tracks`), and every track
of at least ``min_track`` detections is one set (``<video>/track<k>``), so a video of two people gives two sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from projects.faceset.data import FaceAligner, to_tensor
from shared.errors import UserError
from shared.io import IMAGE_EXTS, VIDEO_EXTS, atomic_write_text, write_image
from shared.outputs import check_output

MEDIA = IMAGE_EXTS | VIDEO_EXTS


def _media(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MEDIA)


def collect_sets(spec: str | Path | list, what: str) -> dict[str, list[Path]]:
    """Face sets from a folder of identity folders (one set each), a folder of images (one set), an image, a video,
    or a list of images (comma-separated string or a list: one set). Videos are split into face tracks later."""
    items = str(spec).split(",") if isinstance(spec, str | Path) else [str(s) for s in spec]
    parts = [Path(p.strip()) for p in items if p.strip()]
    if not parts:
        raise UserError(f"{what}: no path given")
    if len(parts) == 1 and parts[0].is_dir():
        root = parts[0]
        subs = {d.name: _media(d) for d in sorted(root.iterdir()) if d.is_dir()}
        subs = {k: v for k, v in subs.items() if v}
        direct = _media(root)
        if subs and not direct:
            return subs
        if direct:
            return {root.name: direct}
        raise UserError(f"{what}: empty set — no images in {root}")
    for p in parts:
        if not p.is_file():
            raise UserError(f"{what}: image not found: {p}")
        if p.suffix.lower() not in MEDIA:
            raise UserError(f"{what}: not an image or video file: {p}")
    return {parts[0].stem if len(parts) == 1 else "probe": parts}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of two sets of [x0, y0, x1, y1] boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def link_tracks(detections: list[tuple[int, np.ndarray]], min_iou: float = 0.3, max_gap: int = 2
                ) -> list[list[tuple[int, int]]]:
    """Greedy IoU tracking: ``detections`` = [(frame, N×4 boxes), …], one entry per frame the detector ran on, in
    order → tracks, each a list of (frame, detection index). A detection joins the live track whose last box
    overlaps it most (IoU ≥ ``min_iou``, each track and detection used once per frame, best pairs first); others
    start tracks; a track that found no detection in more than ``max_gap`` consecutive detector frames ends."""
    tracks: list[list[tuple[int, int]]] = []
    last: list[np.ndarray] = []
    last_step: list[int] = []
    for step, (t, boxes) in enumerate(detections):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        live = [k for k in range(len(tracks)) if step - last_step[k] - 1 <= max_gap]
        taken_t, taken_d = set(), set()
        if live and len(boxes):
            iou = box_iou(np.stack([last[k] for k in live]), boxes)
            for flat in np.argsort(-iou, axis=None, kind="stable"):
                i, j = divmod(int(flat), len(boxes))
                if iou[i, j] < min_iou:
                    break
                if i in taken_t or j in taken_d:
                    continue
                taken_t.add(i)
                taken_d.add(j)
                tracks[live[i]].append((t, j))
                last[live[i]], last_step[live[i]] = boxes[j], step
        for j in range(len(boxes)):
            if j not in taken_d:
                tracks.append([(t, j)])
                last.append(boxes[j])
                last_step.append(step)
    return tracks


def video_tracks(video: Path, aligner: FaceAligner, stride: int = 5, min_track: int = 3,
                 max_frames: int | None = None) -> dict[str, list[tuple[str, np.ndarray]]]:
    """A video's face tracks as sets: {``<stem>/track<k>``: [(``<video>#<frame>``, aligned crop), …]} for tracks of
    at least ``min_track`` detections (longest first)."""
    from shared.face.align import align_face
    from shared.io import iter_video

    if not aligner.detect:
        raise UserError(f"{video}: a video needs MTCNN to find its faces (infer_options.align=true)")
    detector = aligner.detector()
    dets, crops = [], {}
    for t, frame in enumerate(iter_video(video, max_frames=max_frames)):
        if t % max(1, stride):
            continue
        faces = detector(frame)
        dets.append((t, faces.boxes))
        for j, pts in enumerate(faces.points):
            crops[(t, j)] = align_face(frame, pts, aligner.template_name, aligner.size)[0]
    tracks = sorted((tr for tr in link_tracks(dets) if len(tr) >= min_track), key=len, reverse=True)
    return {f"{video.stem}/track{k}": [(f"{video}#{t}", crops[(t, j)]) for t, j in tr]
            for k, tr in enumerate(tracks)}


def expand_videos(sets: dict[str, list[Path]], aligner: FaceAligner, stride: int, min_track: int,
                  max_frames: int | None) -> dict[str, list]:
    """Replace videos by their face tracks: a set that is one video becomes one set per track; a video inside a
    larger set (an identity folder) contributes its longest track."""
    out: dict[str, list] = {}
    for name, sources in sets.items():
        videos = [s for s in sources if s.suffix.lower() in VIDEO_EXTS]
        if not videos:
            out[name] = sources
            continue
        if len(sources) == 1:
            tracks = video_tracks(videos[0], aligner, stride, min_track, max_frames)
            if not tracks:
                raise UserError(f"no face track of ≥{min_track} detections in {videos[0]}")
            out.update(tracks)
            continue
        items: list = [s for s in sources if s.suffix.lower() not in VIDEO_EXTS]
        for v in videos:
            tracks = video_tracks(v, aligner, stride, min_track, max_frames)
            items += next(iter(tracks.values()), [])
        out[name] = items
    return out


def embed_sets(module, sets: dict[str, list], aligner: FaceAligner, undetected: str, batch_size: int,
               save_crops: Path | None, what: str) -> tuple[list[str], torch.Tensor, dict]:
    """Set name → descriptor (L2-normalised), plus per-face alignment records. A set's items are image files (aligned
    here) or (label, aligned crop) pairs from a video track."""
    names, descs, records = [], [], {}
    device = module.device  # a LightningModule; a frozen backbone + mean pooling has no parameters
    for name, files in tqdm(sets.items(), desc=f"embedding {what}", leave=False):
        crops, recs = [], []
        for f in files:
            if isinstance(f, tuple):
                label, crop = f
                detected = True
            else:
                label = str(f)
                crop, detected, _ = aligner(f)
            recs.append({"image": label, "detected": bool(detected)})
            if not detected and undetected == "skip":
                continue
            crops.append(crop)
            if save_crops is not None:
                stem = Path(label.replace("#", "_")).stem
                write_image(save_crops / what / name / f"{stem}.png", crop)
        records[name] = recs
        if not crops:
            raise UserError(f"{what} set {name!r}: empty set — no usable face in {len(files)} image(s)")
        x = torch.stack([to_tensor(c) for c in crops])
        feats = torch.cat([module.net.embed(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)])
        descs.append(F.normalize(module.net.aggregate(feats[None]).float(), dim=1)[0].cpu())
        names.append(name)
    return names, torch.stack(descs), records


def run_inference(module, gallery: Path, probe: str | None, output: Path, threshold: float = 0.5, top_k: int = 5,
                  align: bool = True, mtcnn_dir: str | None = None, undetected: str = "unaligned",
                  template: str = "auto", save_crops: str | None = None, batch_size: int = 32,
                  video_stride: int = 5, min_track: int = 3, max_frames: int | None = None,
                  mtcnn_cache: str | None = None, detector: str = "mtcnn") -> dict:
    if not probe:
        raise UserError("infer needs probe=<folder, image, video or comma-separated images>")
    if undetected not in ("unaligned", "skip"):
        raise UserError(f"infer_options.undetected must be unaligned or skip, got {undetected!r}")
    h, w = module.net.input_size
    if template == "auto":  # the backbone's own alignment (dlib_resnet: dlib's chips), else SphereFace's
        template = getattr(module.net.backbone, "template", "sphereface")
    aligner = FaceAligner(template, (w, h), detect=align, mtcnn_dir=mtcnn_dir, cache_dir=mtcnn_cache,
                          assume_aligned=not align, detector=detector)
    crops_dir = Path(save_crops) if save_crops else None
    if crops_dir is not None:
        check_output(crops_dir, [gallery, *(str(probe).split(",") if isinstance(probe, str | Path) else probe)],
                     folder=True)
    g_sets, p_sets = collect_sets(gallery, "gallery"), collect_sets(probe, "probe")  # path mistakes first
    g_sets = expand_videos(g_sets, aligner, video_stride, min_track, max_frames)
    p_sets = expand_videos(p_sets, aligner, video_stride, min_track, max_frames)
    g_names, g_desc, g_rec = embed_sets(module, g_sets, aligner, undetected, batch_size, crops_dir, "gallery")
    p_names, p_desc, p_rec = embed_sets(module, p_sets, aligner, undetected, batch_size, crops_dir, "probe")
    sim = (p_desc @ g_desc.T).numpy()
    results = []
    for i, name in enumerate(p_names):
        order = np.argsort(-sim[i], kind="stable")[:top_k]
        ranked = [{"identity": g_names[j], "score": round(float(sim[i, j]), 6)} for j in order]
        best = ranked[0]
        entry = {"probe": name, "ranked": ranked, "faces": p_rec[name]}
        if len(g_names) == 1:
            entry["decision"] = "same" if best["score"] >= threshold else "different"
        else:
            entry["identity"] = best["identity"] if best["score"] >= threshold else "unknown"
        results.append(entry)
        verdict = entry.get("decision") or entry["identity"]
        listing = ", ".join(f"{r['identity']} {r['score']:.3f}" for r in ranked)
        print(f"{name}: {verdict} ({listing})")
    report = {"threshold": threshold, "gallery": {n: g_rec[n] for n in g_names}, "results": results}
    output = Path(output)
    if output.suffix.lower() != ".json":
        output = output / "matches.json"
    atomic_write_text(output, json.dumps(report, indent=1) + "\n")
    print(f"results written to {output}")
    return report
