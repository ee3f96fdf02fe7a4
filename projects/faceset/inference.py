"""Gallery/probe inference: align (MTCNN, Sec. 2.2.1), embed, aggregate each set (Eq. 2.1), rank the gallery
identities by cosine similarity, and decide same/different at a threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from projects.faceset.data import FaceAligner, to_tensor
from shared.errors import UserError
from shared.io import IMAGE_EXTS, atomic_write_text, write_image
from shared.outputs import check_output


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def collect_sets(spec: str | Path | list, what: str) -> dict[str, list[Path]]:
    """Face sets from a folder of identity folders (one set each), a folder of images (one set), an image, or a
    list of images (comma-separated string or a list: one set)."""
    items = str(spec).split(",") if isinstance(spec, str | Path) else [str(s) for s in spec]
    parts = [Path(p.strip()) for p in items if p.strip()]
    if not parts:
        raise UserError(f"{what}: no path given")
    if len(parts) == 1 and parts[0].is_dir():
        root = parts[0]
        subs = {d.name: _images(d) for d in sorted(root.iterdir()) if d.is_dir()}
        subs = {k: v for k, v in subs.items() if v}
        direct = _images(root)
        if subs and not direct:
            return subs
        if direct:
            return {root.name: direct}
        raise UserError(f"{what}: empty set — no images in {root}")
    for p in parts:
        if not p.is_file():
            raise UserError(f"{what}: image not found: {p}")
        if p.suffix.lower() not in IMAGE_EXTS:
            raise UserError(f"{what}: not an image file: {p}")
    return {parts[0].stem if len(parts) == 1 else "probe": parts}


def embed_sets(module, sets: dict[str, list[Path]], aligner: FaceAligner, undetected: str, batch_size: int,
               save_crops: Path | None, what: str) -> tuple[list[str], torch.Tensor, dict]:
    """Set name → descriptor (L2-normalised), plus per-image alignment records."""
    names, descs, records = [], [], {}
    device = next(module.parameters()).device
    for name, files in tqdm(sets.items(), desc=f"embedding {what}", leave=False):
        crops, recs = [], []
        for f in files:
            crop, detected, _ = aligner(f)
            recs.append({"image": str(f), "detected": bool(detected)})
            if not detected and undetected == "skip":
                continue
            crops.append(crop)
            if save_crops is not None:
                write_image(save_crops / what / name / f"{f.stem}.png", crop)
        records[name] = recs
        if not crops:
            raise UserError(f"{what} set {name!r}: empty set — no usable face in {len(files)} image(s)")
        x = torch.stack([to_tensor(c) for c in crops])
        feats = torch.cat([module.net.embed(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)])
        descs.append(F.normalize(module.net.aggregate(feats[None]).float(), dim=1)[0].cpu())
        names.append(name)
    return names, torch.stack(descs), records


def run_inference(module, gallery: Path, probe: str | None, output: Path, threshold: float = 0.5, top_k: int = 5,
                  mtcnn_dir: str | None = None, undetected: str = "unaligned", template: str = "sphereface",
                  save_crops: str | None = None, batch_size: int = 32) -> dict:
    if not probe:
        raise UserError("infer needs probe=<folder, image or comma-separated images>")
    if undetected not in ("unaligned", "skip"):
        raise UserError(f"infer_options.undetected must be unaligned or skip, got {undetected!r}")
    h, w = module.net.input_size
    aligner = FaceAligner(template, (w, h), mtcnn_dir=mtcnn_dir, assume_aligned=mtcnn_dir is None)
    crops_dir = Path(save_crops) if save_crops else None
    if crops_dir is not None:
        check_output(crops_dir, [gallery, *(str(probe).split(",") if isinstance(probe, str | Path) else probe)],
                     folder=True)
    g_sets, p_sets = collect_sets(gallery, "gallery"), collect_sets(probe, "probe")  # path mistakes first
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
