"""Evaluation protocols of chapter 2. Each holds an image list (``dataset``) whose per-face features the module
extracts once, then ``evaluate`` turns them into the paper's numbers, tables and plots:

* ``folders`` — identity folders split into two sets per identity (first half / second half): set-vs-set 1:1
  verification (TAR@FAR, AUC) and closed-set identification of the second sets against the first (Rank-1/5/10);
* ``lfw`` — LFW ``pairs.txt`` (10-fold accuracy, TAR@FAR, ROC; Figs. 2.3/2.4) under the four alignment
  policies of Table 2.1 for faces without landmarks;
* ``pairs`` — the same for single-face pairs listed as ``image1 image2 label`` with an IJB-C style 5-point file
  (the dissertation's 15,000-pair IJB-C subset of Table 2.1);
* ``ijbc`` — IJB-C 1:1 (TAR@FAR 1e-3/1e-2/1e-1, ROC, Fig. 2.7) and 1:N open-set identification with G1 and G2
  scored separately then averaged (TPIR@FPIR 0.001/0.01/0.1, Rank-1/5/10, ROC and CMC, Table 2.3, Figs. 2.8/2.9)
  from the original meta files, with media-then-template aggregation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from projects.faceset import ijbc
from projects.faceset.data import FaceImages, scan_identities
from projects.faceset.metrics import (
    FARS,
    FPIRS,
    RANKS,
    auc,
    closed_set_ranks,
    cmc,
    combine_galleries,
    lfw_accuracy,
    open_set_search,
    pair_scores,
    plot_curves,
    roc,
    similarity_matrix,
    tar_at_far,
)
from shared.errors import UserError
from shared.io import IMAGE_EXTS
from shared.report import Table

Aggregate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
POLICIES = {"ignore": 1, "mixed": 2, "both_unaligned": 3, "none_aligned": 4}  # Table 2.1 settings


def _far_row(scores: np.ndarray, labels: np.ndarray, mode: str = "bounded") -> dict[str, float]:
    return {f"TAR@FAR {f:g}": v for f, v in tar_at_far(scores, labels, FARS, mode).items()}


def policy_pair_scores(policy: str, feats: np.ndarray, feats_u: np.ndarray, detected: np.ndarray,
                       i1: np.ndarray, i2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Table 2.1 settings for image pairs where a face may lack landmarks: (kept-pair mask, scores of kept pairs).
    ``ignore`` (1) keeps aligned–aligned pairs only; ``mixed`` (2) compares aligned with unaligned crops as they
    come; ``both_unaligned`` (3) uses the unaligned crops of both faces when either lacks landmarks;
    ``none_aligned`` (4) aligns nothing."""
    if policy not in POLICIES:
        raise UserError(f"unknown alignment policy {policy!r} ({' | '.join(POLICIES)})")
    keep = detected[i1] & detected[i2] if policy == "ignore" else np.ones(len(i1), bool)
    i1, i2 = i1[keep], i2[keep]
    if policy in ("ignore", "mixed"):
        return keep, pair_scores(feats, i1, None, i2)  # undetected faces' crops are the unaligned ones
    if policy == "none_aligned":
        return keep, pair_scores(feats_u, i1, None, i2)
    return keep, scores_unaligned_unless_clean(feats, feats_u, detected, i1, i2)


def policy_pair_kinds(policy: str, detected: np.ndarray, i1: np.ndarray, i2: np.ndarray) -> dict[str, int]:
    """How many kept pairs compare aligned–aligned, aligned–unaligned and unaligned–unaligned crops under a Table 2.1
    setting (the four settings differ in these counts whenever some faces lack landmarks)."""
    a, b = detected[i1], detected[i2]
    both, one, none = int((a & b).sum()), int((a ^ b).sum()), int((~a & ~b).sum())
    return {"ignore": {"aa": both, "au": 0, "uu": 0}, "mixed": {"aa": both, "au": one, "uu": none},
            "both_unaligned": {"aa": both, "au": 0, "uu": one + none},
            "none_aligned": {"aa": 0, "au": 0, "uu": both + one + none}}[policy]


def scores_unaligned_unless_clean(feats, feats_u, clean: np.ndarray, i1: np.ndarray, i2: np.ndarray) -> np.ndarray:
    """Table 2.1 setting 3: pair k is scored on ``feats`` when both ``clean[i1[k]]`` and ``clean[i2[k]]`` (faces
    with landmarks, or templates whose faces all have them), else on the unaligned ``feats_u`` of both sides (none
    given: ``feats`` throughout)."""
    s = pair_scores(feats, i1, None, i2)
    if feats_u is not None:
        dirty = ~(clean[i1] & clean[i2])
        s[dirty] = pair_scores(feats_u, i1[dirty], None, i2[dirty])
    return s


class Protocol:
    """What every protocol has: a ``dataset`` of images whose files :meth:`files` lists (the validation check)."""

    dataset: FaceImages

    def files(self) -> list[Path]:
        return [Path(item[0]) for item in self.dataset.items]


class FolderSets(Protocol):
    """Identity folders (``root``, or ``identities`` = [(name, images), …]) → set A (first ⌈n/2⌉ images) and set B
    (the rest) per identity."""

    with_unaligned = False

    def __init__(self, name: str, root: str | None = None, aligner=None, identities: list | None = None, **_) -> None:
        self.name = name
        if identities is not None:
            names, images = [n for n, _ in identities], [list(f) for _, f in identities]
        else:
            names, images = scan_identities(root)
        items, self.set_of = [], []
        for label, files in enumerate(images):
            half = (len(files) + 1) // 2
            for k, f in enumerate(files):
                items.append((f, label))
                self.set_of.append(2 * label + (k >= half))
        self.set_of = np.asarray(self.set_of)
        self.identities = names
        self.dataset = FaceImages(items, aligner)

    def evaluate(self, feats: np.ndarray, feats_u: np.ndarray | None, detected: np.ndarray, aggregate: Aggregate,
                 plot_dir: Path | None) -> tuple[dict[str, float], list[Table]]:
        sets, desc = ijbc.media_template_features(feats, self.set_of, np.arange(len(self.set_of)), aggregate)
        a_rows, b_rows = np.nonzero(sets % 2 == 0)[0], np.nonzero(sets % 2 == 1)[0]
        if not len(b_rows):
            raise UserError(f"test set {self.name}: every identity has a single image; need ≥2 for two sets")
        ia, ib = np.meshgrid(a_rows, b_rows, indexing="ij")
        ia, ib = ia.ravel(), ib.ravel()
        labels = sets[ia] // 2 == sets[ib] // 2
        scores = pair_scores(desc, ia, None, ib)
        far, tar, _ = roc(scores, labels)
        sim = similarity_matrix(desc[b_rows], desc[a_rows])
        ranks = closed_set_ranks(sim, sets[b_rows] // 2, sets[a_rows] // 2, max(RANKS))
        row = {"test set": self.name, "sets": len(sets), **_far_row(scores, labels), "AUC": auc(far, tar)}
        row.update({f"Rank{k}": float(ranks[min(k, len(ranks)) - 1]) for k in RANKS})
        # the scores themselves: how far apart the identities are, beyond the saturated rates of a small set
        row.update({"genuine cos": float(scores[labels].mean()), "impostor cos": float(scores[~labels].mean()),
                    "max impostor cos": float(scores[~labels].max()) if (~labels).any() else None})
        if plot_dir is not None:
            plot_curves(plot_dir / f"{self.name}_roc.png", {self.name: (far, tar)}, "FAR", "TAR",
                        f"{self.name}: set-vs-set ROC", logx=True)
            plot_curves(plot_dir / f"{self.name}_cmc.png", {self.name: (np.arange(1, len(ranks) + 1), ranks)},
                        "rank", "identification rate", f"{self.name}: closed-set CMC")
        metrics = {"auc": row["AUC"], "rank1": row["Rank1"], **{f"tar@far{f:g}": row[f"TAR@FAR {f:g}"] for f in FARS},
                   "genuine_cos": row["genuine cos"], "impostor_cos": row["impostor cos"]}
        cols = ["test set", "sets", *[f"TAR@FAR {f:g}" for f in FARS], "AUC", *[f"Rank{k}" for k in RANKS],
                "genuine cos", "impostor cos", "max impostor cos"]
        return metrics, [Table(f"Set-vs-set verification and identification ({self.name})", cols, [row])]


def _find_image(root: Path, name: str, number: int) -> Path:
    stem = root / name / f"{name}_{number:04d}"
    for ext in (".jpg", *sorted(IMAGE_EXTS)):
        if stem.with_suffix(ext).is_file():
            return stem.with_suffix(ext)
    raise UserError(f"LFW image not found: {stem}.jpg")


def read_lfw_pairs(path: str | Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]], np.ndarray, int]:
    """LFW ``pairs.txt``: header ``folds n``, then per fold n genuine rows ``name i j`` and n impostor rows
    ``name1 i name2 j`` → (first images, second images, labels, folds)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"LFW pairs file not found: {path}")
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    a, b, labels = [], [], []
    for n, parts in enumerate(lines[1:], 2):
        try:
            if len(parts) == 3:
                a.append((parts[0], int(parts[1])))
                b.append((parts[0], int(parts[2])))
                labels.append(True)
            elif len(parts) == 4:
                a.append((parts[0], int(parts[1])))
                b.append((parts[2], int(parts[3])))
                labels.append(False)
            else:
                raise ValueError(f"{len(parts)} fields")
        except ValueError as exc:
            raise UserError(f"{path}:{n}: not an LFW pair line ({exc})") from exc
    if not labels:
        raise UserError(f"{path}: no pairs")
    try:
        folds = int(lines[0][0])
    except (ValueError, IndexError) as exc:
        raise UserError(f"{path}: the first line must be '<folds> <pairs per fold>'") from exc
    return a, b, np.asarray(labels), folds


def read_landmarks(path: str | Path) -> dict[str, np.ndarray]:
    """SphereFace's ``lfw_landmark.txt``: ``Name/Name_0001.jpg`` then x1 y1 … x5 y5 (tab or space separated)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"landmark file not found: {path}")
    out = {}
    for parts in (ln.split() for ln in path.read_text().splitlines() if ln.strip()):
        if len(parts) != 11:
            raise UserError(f"{path}: expected an image name and 10 coordinates, got {len(parts)} fields")
        out[parts[0]] = np.array([float(v) for v in parts[1:]]).reshape(5, 2)
    return out


DETECTORS = ("mtcnn", "landmarks", "points")


def _detector_setup(name: str, aligner, detector: str, points_file) -> str:
    """Sets the aligner for a protocol's ``detector``: ``mtcnn`` runs MTCNN on every image (cached per image file;
    no face = no landmarks), ``landmarks`` / ``points`` take the given landmark file (an image it does not list = no
    landmarks). Returns the note the table shows."""
    if detector not in DETECTORS:
        raise UserError(f"test set {name}: detector must be {' | '.join(DETECTORS)}, got {detector!r}")
    aligner.assume_aligned = False
    if detector == "mtcnn":
        aligner.detect = True
        from shared.face.mtcnn import MTCNN

        th = aligner.thresholds or MTCNN().thresholds
        return f"MTCNN (stage thresholds {'/'.join(f'{t:g}' for t in th)})"
    if not points_file:
        raise UserError(f"test set {name}: detector {detector} needs a landmark file")
    aligner.detect = False
    return f"landmark file {Path(points_file).name}"


def _undetected_note(detected: np.ndarray, how: str) -> str:
    n = int((~detected).sum())
    return f"{how}: {n} of {len(detected)} faces undetected ({100 * n / max(len(detected), 1):.1f} %)"


class LFWPairs(Protocol):
    """LFW-style pair verification: 10-fold accuracy and TAR@FAR under the alignment policies of Table 2.1. Which
    faces have landmarks: ``detector=mtcnn`` (the study's setting: MTCNN decides, the threshold of the paper's
    pipeline) or ``detector=landmarks`` (SphereFace's ``lfw_landmark.txt``; unlisted images are undetected)."""

    with_unaligned = True

    def __init__(self, name: str, root: str, aligner, pairs: str | None = None, landmarks: str | None = None,
                 policies: tuple[str, ...] = tuple(POLICIES), detector: str | None = None, **_) -> None:
        self.name, root = name, Path(root)
        a, b, self.labels, self.folds = read_lfw_pairs(pairs or root / "pairs.txt")
        detector = detector or ("landmarks" if landmarks else "mtcnn")
        self.how = _detector_setup(name, aligner, detector, landmarks)
        marks = read_landmarks(landmarks) if landmarks and detector == "landmarks" else None
        keys = sorted(set(a) | set(b))
        index = {k: i for i, k in enumerate(keys)}
        self.i1 = np.array([index[k] for k in a])
        self.i2 = np.array([index[k] for k in b])
        items = []
        for nm, num in keys:
            path = _find_image(root, nm, num)
            rel = f"{nm}/{path.name}"
            items.append((path, 0, marks.get(rel)) if marks is not None else (path, 0))
        self.policies = list(policies)
        for p in self.policies:
            if p not in POLICIES:
                raise UserError(f"unknown alignment policy {p!r} ({' | '.join(POLICIES)})")
        self.dataset = FaceImages(items, aligner, with_unaligned=True)

    def evaluate(self, feats: np.ndarray, feats_u: np.ndarray | None, detected: np.ndarray, aggregate: Aggregate,
                 plot_dir: Path | None) -> tuple[dict[str, float], list[Table]]:
        rows, curves, metrics = [], {}, {}
        for policy in self.policies:
            keep, scores = policy_pair_scores(policy, feats, feats_u, detected, self.i1, self.i2)
            labels = self.labels[keep]
            kinds = policy_pair_kinds(policy, detected, self.i1, self.i2)
            row = {"Setting Type": POLICIES[policy], "policy": policy, "pairs": int(keep.sum()),
                   "aligned–aligned": kinds["aa"], "aligned–unaligned": kinds["au"],
                   "unaligned–unaligned": kinds["uu"]}
            if labels.all() or not labels.any():
                rows.append(row)
                continue
            row.update(_far_row(scores, labels))
            folds = self.folds if policy != "ignore" else min(self.folds, len(scores))  # pairs.txt's folds
            acc, std, _ = lfw_accuracy(scores, labels, folds)
            far, tar, _ = roc(scores, labels)
            row.update({"accuracy": acc, "std": std, "AUC": auc(far, tar)})
            curves[f"{POLICIES[policy]}: {policy}"] = (far, tar)
            rows.append(row)
            if policy == self.policies[0]:
                metrics = {"accuracy": acc, "auc": row["AUC"], **{f"tar@far{f:g}": row[f"TAR@FAR {f:g}"] for f in FARS}}
        if plot_dir is not None and curves:
            plot_curves(plot_dir / f"{self.name}_roc.png", curves, "FAR", "TAR", f"{self.name}: ROC", logx=True)
        cols = ["Setting Type", "policy", "pairs", "aligned–aligned", "aligned–unaligned", "unaligned–unaligned",
                *[f"TAR@FAR {f:g}" for f in FARS], "accuracy", "std", "AUC"]
        metrics["undetected"] = float((~detected).mean())
        notes = [_undetected_note(detected, self.how),
                 f"TAR@FAR: best TAR with FAR ≤ target; accuracy: {self.folds}-fold, threshold from the others"]
        return metrics, [Table(f"Table 2.1 layout: alignment policies ({self.name})", cols, rows, notes)]


class FacePairs(LFWPairs):
    """Single-face pairs from any image tree — e.g. the dissertation's 15,000-pair IJB-C subset of Table 2.1:
    ``pairs`` lines ``image1 image2 label`` (paths relative to ``root/images``, label 1 same / 0 different), landmarks
    from an IJB-C style 5-point file (``name x1 y1 … x5 y5 score``; missing or below ``min_score`` = no
    landmarks) or else the data's MTCNN / pre-aligned setting; scored under the four policies."""

    def __init__(self, name: str, root: str, aligner, pairs: str = "pairs.txt", points: str | None = None,
                 images: str = "", min_score: float = 0.0, folds: int = 10,
                 policies: tuple[str, ...] = tuple(POLICIES), detector: str | None = None, **_) -> None:
        self.name, root = name, Path(root)
        pairs_path = root / pairs
        if not pairs_path.is_file():
            raise UserError(f"pairs file not found: {pairs_path}")
        a, b, labels = [], [], []
        for n, parts in enumerate((ln.split() for ln in pairs_path.read_text().splitlines() if ln.strip()), 1):
            if len(parts) != 3 or parts[2] not in ("0", "1"):
                raise UserError(f"{pairs_path}:{n}: expected 'image1 image2 label(0|1)'")
            a.append(parts[0])
            b.append(parts[1])
            labels.append(parts[2] == "1")
        self.labels, self.folds = np.asarray(labels), folds
        detector = detector or ("points" if points else "mtcnn")
        self.how = _detector_setup(name, aligner, detector, points)
        pts = ijbc.read_5pts(root / points) if points and detector == "points" else None
        if pts is not None:
            aligner.min_score = min_score
            self.how += f" (faceness ≥ {min_score:g})"
        keys = sorted(set(a) | set(b))
        index = {k: i for i, k in enumerate(keys)}
        self.i1, self.i2 = np.array([index[k] for k in a]), np.array([index[k] for k in b])
        folder = root / images
        items = [(folder / k, 0, *pts.get(k, (None, -1.0))) if pts is not None else (folder / k, 0) for k in keys]
        self.policies = list(policies)
        for p in self.policies:
            if p not in POLICIES:
                raise UserError(f"unknown alignment policy {p!r} ({' | '.join(POLICIES)})")
        self.dataset = FaceImages(items, aligner, with_unaligned=True)


class IJBC(Protocol):
    """IJB-C from ``<root>/loose_crop`` images and ``<root>/meta`` files (insightface layout).

    ``policy`` (Table 2.1 at template level): ``ignore`` drops faces without landmarks; ``mixed`` uses their
    unaligned crops beside the aligned faces; ``both_unaligned`` (the dissertation's choice for its later
    experiments) compares two templates with the unaligned crops of *all* their faces when either template holds a
    face without landmarks, and with aligned faces otherwise — for every 1:1 pair and every probe–gallery pair of
    1:N; ``none_aligned`` aligns nothing."""

    def __init__(self, name: str, root: str, aligner, policy: str = "mixed", min_score: float = 0.0,
                 faces: str = "meta/ijbc_face_tid_mid.txt", pairs: str | None = "meta/ijbc_template_pair_label.txt",
                 points: str | None = "meta/ijbc_name_5pts_score.txt", images: str = "loose_crop",
                 galleries: tuple[str, ...] | None = ("meta/ijbc_1N_gallery_G1.csv", "meta/ijbc_1N_gallery_G2.csv"),
                 probe: str | None = "meta/ijbc_1N_probe_mixed.csv", far_mode: str = "bounded",
                 curve_points: int = 100, detector: str | None = None, **_) -> None:
        if policy not in POLICIES:
            raise UserError(f"IJB-C policy must be {' | '.join(POLICIES)} (template level), got {policy!r}")
        self.name, self.root, self.policy, self.far_mode = name, Path(root), policy, far_mode
        self.with_unaligned = policy == "both_unaligned"
        names, self.tids, self.mids = ijbc.read_face_tid_mid(self.root / faces)
        self.pairs = ijbc.read_template_pairs(self.root / pairs) if pairs else None
        detector = detector or ("points" if points else "mtcnn")
        self.how = _detector_setup(name, aligner, detector, points) if policy != "none_aligned" else "no alignment"
        use_points = detector == "points" and policy != "none_aligned"
        pts = ijbc.read_5pts(self.root / points) if use_points else {}
        aligner.min_score = min_score
        if use_points:
            self.how += f" (faceness ≥ {min_score:g})"
        if policy == "none_aligned":
            aligner.detect, aligner.assume_aligned = False, False
        items = []
        for n in names:
            p, s = pts.get(n, (None, -1.0)) if use_points else (None, 1.0)
            items.append((self.root / images / n, 0, p, s))
        self.galleries = [(Path(g).stem.split("_")[-1], ijbc.read_1n_csv(self.root / g)) for g in galleries or []
                          if (self.root / g).is_file()]
        self.probe = ijbc.read_1n_csv(self.root / probe) if probe and (self.root / probe).is_file() else None
        self.curve = np.logspace(-4, 0, curve_points)
        self.dataset = FaceImages(items, aligner, with_unaligned=self.with_unaligned)

    def _templates(self, feats: np.ndarray, feats_u: np.ndarray | None, detected: np.ndarray, aggregate: Aggregate):
        """(sorted template ids, descriptors, unaligned descriptors or None, template has all faces aligned)."""
        keep = detected if self.policy == "ignore" else np.ones(len(detected), bool)
        if not keep.any():
            raise UserError(f"{self.name}: no face has landmarks; policy 'ignore' leaves nothing to compare")
        templates, desc = ijbc.media_template_features(feats[keep], self.tids[keep], self.mids[keep], aggregate)
        clean = ~np.isin(templates, self.tids[~detected])
        desc_u = None
        if self.policy == "both_unaligned":
            if feats_u is None:
                raise UserError(f"{self.name}: policy both_unaligned needs the unaligned crops' features (features "
                                "cached without them: delete the cache or choose another policy)")
            _, desc_u = ijbc.media_template_features(feats_u, self.tids, self.mids, aggregate)
        return templates, desc, desc_u, clean

    @staticmethod
    def _similarity(desc, desc_u, clean: np.ndarray, ip: np.ndarray, ig: np.ndarray) -> np.ndarray:
        sim = similarity_matrix(desc[ip], desc[ig])
        if desc_u is not None:
            both = clean[ip][:, None] & clean[ig][None, :]
            sim = np.where(both, sim, similarity_matrix(desc_u[ip], desc_u[ig]))
        return sim

    def evaluate(self, feats: np.ndarray, feats_u: np.ndarray | None, detected: np.ndarray, aggregate: Aggregate,
                 plot_dir: Path | None) -> tuple[dict[str, float], list[Table]]:
        templates, desc, desc_u, clean = self._templates(feats, feats_u, detected, aggregate)
        tables, metrics = [], {}
        note = (f"policy {self.policy}; {_undetected_note(detected, self.how)}, in {int((~clean).sum())} of "
                f"{len(clean)} templates")
        metrics["undetected"] = float((~detected).mean())
        if self.pairs is not None:
            t1, t2, lab = self.pairs
            ok = np.isin(t1, templates) & np.isin(t2, templates)
            scores = scores_unaligned_unless_clean(desc, desc_u, clean, np.searchsorted(templates, t1[ok]),
                                                   np.searchsorted(templates, t2[ok]))
            far, tar, _ = roc(scores, lab[ok])
            row = {"test set": self.name, "pairs": int(ok.sum()), **_far_row(scores, lab[ok], self.far_mode),
                   "AUC": auc(far, tar)}
            metrics.update({"auc": row["AUC"], **{f"tar@far{f:g}": row[f"TAR@FAR {f:g}"] for f in FARS}})
            notes = [note] + ([f"{int((~ok).sum())} pairs dropped (templates without faces)"] if (~ok).any() else [])
            tables.append(Table(f"IJB-C 1:1 verification ({self.name}, Fig. 2.7)",
                                ["test set", "pairs", *[f"TAR@FAR {f:g}" for f in FARS], "AUC"], [row], notes))
            if plot_dir is not None:
                plot_curves(plot_dir / f"{self.name}_1to1_roc.png", {"ours": (far, tar)}, "FAR", "TAR",
                            "IJB-C 1:1 verification", logx=True)
        if self.probe is not None and self.galleries:
            p_t, p_s = self.probe
            pk = np.isin(p_t, templates)
            ip = np.searchsorted(templates, p_t[pk])
            results = []
            for _, (g_t, g_s) in self.galleries:
                gk = np.isin(g_t, templates)
                sim = self._similarity(desc, desc_u, clean, ip, np.searchsorted(templates, g_t[gk]))
                results.append(open_set_search(sim, p_s[pk], g_s[gk], FPIRS, max(RANKS), curve=self.curve))
            dropped = int((~pk).sum()) + sum(int((~np.isin(g_t, templates)).sum()) for _, (g_t, _) in self.galleries)
            row = {"Name": "Ours", **combine_galleries(results, int(pk.sum()))}
            for name, r in zip([g[0] for g in self.galleries], results):
                row[f"Rank1 {name}"] = float(r.rank_hits[0] / max(r.n_mated, 1))
            metrics.update({"rank1": row["Rank1"], **{f"tpir@fpir{f:g}": row[f"TPIR@FPIR {f:g}"] for f in FPIRS}})
            cols = ["Name", *[f"TPIR@FPIR {f:g}" for f in FPIRS], *[f"Rank{k}" for k in RANKS]]
            tables.append(Table(f"Table 2.3 layout: IJB-C 1:N open-set identification ({self.name})", cols, [row],
                                [note, "TPIR averaged over " + " and ".join(g[0] for g in self.galleries)
                                 + "; Rank-k over all probes; threshold: at most ⌊FPIR·N⌋ non-mated searches above"]
                                + ([f"{dropped} 1:N templates without faces left out"] if dropped else [])))
            if plot_dir is not None:
                curve = np.nanmean([r.tpir_curve for r in results], 0)
                plot_curves(plot_dir / f"{self.name}_1toN_roc.png", {"ours": (self.curve, curve)}, "FPIR", "TPIR",
                            "IJB-C 1:N open-set ROC (Fig. 2.8)", logx=True)
                c = cmc(results, int(pk.sum()))
                plot_curves(plot_dir / f"{self.name}_cmc.png", {"ours": (np.arange(1, len(c) + 1), c)}, "rank",
                            "identification rate", "IJB-C 1:N CMC (Fig. 2.9)")
        if not tables:
            raise UserError(f"{self.name}: neither a pair file nor 1:N gallery/probe files found under {self.root}")
        return metrics, tables


KINDS = {"folders": FolderSets, "lfw": LFWPairs, "pairs": FacePairs, "ijbc": IJBC}


def build(name: str, spec: dict, datamodule) -> FolderSets | LFWPairs | FacePairs | IJBC:
    """A protocol from its config ``{kind: …, root: …, options}``; alignment settings default to the data's."""
    spec = dict(spec)
    kind = spec.pop("kind", "folders")
    if kind not in KINDS:
        raise UserError(f"test set {name}: unknown kind {kind!r} ({' | '.join(KINDS)})")
    if not spec.get("root"):
        raise UserError(f"test set {name}: needs a root")
    align = {k: spec.pop(k) for k in ("mtcnn_dir", "assume_aligned", "template", "size", "thresholds") if k in spec}
    if "template" in align:
        align["template_name"] = align.pop("template")
    return KINDS[kind](name, aligner=datamodule.aligner(**align), **spec)
