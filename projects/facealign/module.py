"""LightningModule of the landmark detector: training with the Table 3.1 losses, the 300-W / 300-VW / pseudo-video
evaluation (NME Eq. 3.1, STD/SDD Eqs. 3.2–3.3, with and without the flow fusion of Eq. 3.12) laid out like
Tables 3.2–3.3, the Fig. 3.3/3.4/3.10 plots, and inference on a user's images and videos."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn

from projects.facealign import metrics as M
from projects.facealign.fusion import FlowFusion
from projects.facealign.landmarks import (
    apply_affine,
    crop_transform,
    invert_affine,
    landmark_box,
    warp_crop,
    write_pts,
)
from projects.facealign.model import LandmarkLoss
from shared.datamodule import all_ranks, test_set_names
from shared.errors import TrainingDiverged, UserError
from shared.io import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    atomic_write_text,
    iter_video,
    open_video,
    read_image,
    write_image,
    write_video,
)
from shared.optim import make_optimizer, make_scheduler
from shared.outputs import destinations, each_input, raise_failures
from shared.report import Table


def to_image_coords(pred: Tensor, to_image: Tensor, size: int) -> Tensor:
    """Normalised crop coordinates B×N×2 → image pixels through the B×2×3 crop → image affines."""
    p = pred * (size - 1)
    return p @ to_image[:, :, :2].transpose(1, 2) + to_image[:, None, :, 2]


def _subset_number(name: str) -> int | None:
    m = re.search(r"(?:cat|category|subset)[-_ ]?([123])(?:[-_ ]detected)?$", name.lower())
    return int(m.group(1)) if m else None


def _base_name(name: str) -> str:
    """A test-set name without its detector-protocol suffix (``common_detected`` → ``common``)."""
    return re.sub(r"[-_ ]detected$", "", name.lower())


def merge_ranks(parts: list[dict[str, dict[str, list]]]) -> dict[str, dict[str, list]]:
    """Concatenate the per-set result lists gathered from every DDP rank (rank order)."""
    merged: dict[str, dict[str, list]] = {}
    for part in parts:
        for name, store in part.items():
            dst = merged.setdefault(name, {})
            for k, v in store.items():
                dst.setdefault(k, []).extend(v)
    return merged


class FaceAlignModule(pl.LightningModule):
    def __init__(self, net: nn.Module, method: str = "Ours", loss: str = "l2", loss_options: dict | None = None,
                 optimizer: dict | None = None, scheduler: dict | None = None, norm: str = "ocular",
                 failure_threshold: float = 0.08, fusion: dict | None = None, plots: bool = True,
                 margin: float = 0.25, refine_iters: int = 2, chunk: int = 64, init_from: str | None = None,
                 first_level_weight: float = 1.0, training_data: str = "300-W") -> None:
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])
        if init_from:  # fine-tuning (Table 3.4) starts from a trained detector's weights
            from shared.checkpoint import load_weights

            if not Path(init_from).is_file():
                raise UserError(f"model.init_from: checkpoint not found: {init_from}")
            load_weights(self, init_from)
        self.loss_fn = LandmarkLoss(loss, **(loss_options or {}))
        if norm not in M.NORMS:
            raise UserError(f"unknown NME normalisation {norm!r} (ocular | pupil)")
        self._val: list[np.ndarray] = []
        self._test: dict[str, dict[str, list]] = {}
        self._test_names: list[str] = []

    @property
    def size(self) -> int:
        return int(self.net.in_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def fusion(self) -> FlowFusion | None:
        cfg = self.hparams.fusion
        return None if cfg is None or cfg.get("enabled", True) is False else FlowFusion(
            **{k: v for k, v in cfg.items() if k != "enabled"})

    # ------------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        kw = dict(valid=batch.get("valid"), step=self.global_step)  # Modified L2 mask, annealed L0 (Table 3.1)
        if hasattr(self.net, "levels"):  # cascade: both levels are supervised
            p1, p2 = self.net.levels(batch["image"])
            w = self.hparams.first_level_weight
            loss = self.loss_fn(p2, batch["target"], **kw) + w * self.loss_fn(p1, batch["target"], **kw)
        else:
            loss = self.loss_fn(self.net(batch["image"]), batch["target"], **kw)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at step {self.global_step} — lower "
                                   "model.optimizer.lr")
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def configure_optimizers(self):
        if not any(p.requires_grad for p in self.net.parameters()):
            raise UserError(f"model.net ({type(self.net).__name__}) has no trainable parameters: a fixed reference "
                            "such as model=dlib is evaluated, not trained (python -m projects.facealign.eval "
                            "model=dlib allow_untrained=true …)")
        opt = make_optimizer(self.net.parameters(), **{"name": "adam", "lr": 1e-3, **(self.hparams.optimizer or {})})
        sched = make_scheduler(opt, **{"name": None, **(self.hparams.scheduler or {})})
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    # ------------------------------------------------------------------------------------------ evaluation
    def _image_nme(self, batch: dict) -> np.ndarray:
        pred = to_image_coords(self.net(batch["image"]), batch["to_image"], self.size)
        return M.nme(pred.double().cpu().numpy(), batch["gt"].double().cpu().numpy(), self.hparams.norm)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val.append(self._image_nme(batch))

    def on_validation_epoch_end(self) -> None:
        vals = [v for part in all_ranks(self._val) for v in part]  # every face once, whatever the rank
        if vals:
            self.log("val/nme", float(np.concatenate(vals).mean()), prog_bar=True)
        self._val = []

    def on_test_start(self) -> None:
        self._test_names = test_set_names(self.trainer)
        self._test = {n: {} for n in self._test_names}

    def predict_video(self, crops: Tensor, to_image: Tensor) -> np.ndarray:
        """Per-frame landmarks (image pixels) of T crops."""
        out = [to_image_coords(self.net(crops[i:i + self.hparams.chunk]), to_image[i:i + self.hparams.chunk],
                               self.size) for i in range(0, len(crops), self.hparams.chunk)]
        return torch.cat(out).double().cpu().numpy()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        store = self._test[self._test_names[dataloader_idx]]
        if "full" in batch:  # detector-box protocol: one whole image, predicted from its face box like infer
            pts = self._predict_from_box(batch["full"][0].cpu().numpy(), batch["box"][0].double().cpu().numpy())
            store.setdefault("nme", []).append(M.nme(pts[None], batch["gt"][0].double().cpu().numpy()[None],
                                                     self.hparams.norm))
            store.setdefault("missed", []).append(np.array([not bool(batch["detected"][0])]))
            return
        if "image" in batch:
            store.setdefault("nme", []).append(self._image_nme(batch))
            return
        gt = batch["gt"][0].double().cpu().numpy()
        fusion = self.fusion()
        if "video" in batch:  # 300-VW, detector-box protocol: decode and predict frame by frame, like infer
            pred, fused, detected = self.predict_detected_video(
                Path(batch["video"][0]), batch["numbers"][0].tolist(), batch["boxes"][0].double().cpu().numpy(),
                gt, fusion)
            results = {"": pred, **({"_fused": fused} if fused is not None else {})}
            store.setdefault("missed", []).append(~detected)
        else:
            pred = self.predict_video(batch["crops"][0], batch["to_image"][0])
            results = {"": pred}
            if fusion is not None and "frames" in batch:
                results["_fused"] = fusion(batch["frames"][0].cpu().numpy(), pred)[0].astype(np.float64)
        for tag, p in results.items():
            store.setdefault(f"nme{tag}", []).append(M.nme(p, gt, self.hparams.norm))
            store.setdefault(f"sdd{tag}", []).append(M.sdd(p, gt))
            store.setdefault(f"std{tag}", []).append(M.std_metric(p, d=float(M.normaliser(gt).mean())))
            store.setdefault(f"noise{tag}", []).append(M.noise(p, gt))
            store.setdefault(f"jitter{tag}", []).append(M.jitter(p, per_landmark=True))  # label-free stability
            store.setdefault(f"jitter_norm{tag}", []).append(M.jitter(p))

    def on_test_epoch_end(self) -> None:
        self._test = merge_ranks(all_ranks(self._test))
        out_dir = Path(self.trainer.default_root_dir or ".") / "plots"
        thr = self.hparams.failure_threshold
        ced: dict[str, np.ndarray] = {}
        for name, store in self._test.items():
            if not store:
                continue
            e = np.concatenate(store["nme"])
            logs = {"nme": e.mean(), "auc": M.auc(e, thr), "failure": M.failure_rate(e, thr), "count": len(e)}
            if "missed" in store:
                logs["detector_misses"] = np.concatenate(store["missed"]).sum()
            ced[name] = e
            for tag in ("", "_fused"):
                if f"sdd{tag}" in store:
                    logs[f"sdd{tag}"] = np.mean(store[f"sdd{tag}"])
                    logs[f"std{tag}"] = np.mean(store[f"std{tag}"])
                    logs[f"jitter{tag}"] = np.mean(store[f"jitter_norm{tag}"])
                    if tag:
                        logs["nme_fused"] = np.concatenate(store["nme_fused"]).mean()
            self.log_dict({f"test/{name}/{k}": float(v) for k, v in logs.items()}, sync_dist=False)
            if self.hparams.plots and self.trainer.is_global_zero and "noise" in store:
                z = np.concatenate(store["noise"])
                M.plot_landmark_bars(z, out_dir / f"{name}_noise_bars.png", f"{name}: detection noise (Fig. 3.3)")
                M.plot_noise_histograms(z, out_dir / f"{name}_noise_hist2d.png")
                sdds = {"detector": np.mean(store["sdd"], 0)}
                if "sdd_fused" in store:
                    sdds["detector + flow fusion"] = np.mean(store["sdd_fused"], 0)
                M.plot_sdd_bars(sdds, out_dir / f"{name}_sdd.png")
        if self.hparams.plots and self.trainer.is_global_zero and ced:
            M.plot_ced(ced, out_dir / "ced.png", thr)
        if self.trainer.is_global_zero:
            self._save_arrays(Path(self.trainer.default_root_dir or ".") / "stability.npz")

    def _save_arrays(self, path: Path) -> None:
        """Per test set: every face's NME, the mean per-landmark STD/SDD arrays (68×2) and the per-video ones — the
        inputs of Fig. 3.10 across models (``python -m projects.facealign.study <sweep>``, or ``plot_sweep --sdd``)."""
        arrays = {}
        for name, store in self._test.items():
            for key, vals in store.items():
                if key.startswith("nme"):
                    arrays[f"{name}/{key}"] = np.concatenate(vals)
                elif key.startswith(("sdd", "std", "jitter")):
                    arrays[f"{name}/{key}"] = np.mean(vals, 0)
                    arrays[f"{name}/{key}_videos"] = np.stack(vals)  # per video: pooled over sets by the study
        if arrays:
            import io

            from shared.io import atomic_write_bytes

            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write_bytes(path, buf.getvalue())

    def report_tables(self, results: list[dict]) -> list[Table]:
        m = {k: v for r in results for k, v in r.items()}
        g = lambda n, k, pct=False: (None if f"test/{n}/{k}" not in m  # noqa: E731
                                     else m[f"test/{n}/{k}"] * (100 if pct else 1))
        norm = "inter-ocular" if self.hparams.norm == "ocular" else "inter-pupil"
        method = self.hparams.method
        tables = [Table(f"{method}: NME per test set (% of the {norm} distance)",
                        ["test set", "protocol", "NME (%)", f"AUC@{self.hparams.failure_threshold}", "failure (%)",
                         "faces", "NME + fusion (%)"],
                        [{"test set": n, "protocol": "detector box" if g(n, "detector_misses") is not None
                          else "ground-truth box", "NME (%)": g(n, "nme", True),
                          f"AUC@{self.hparams.failure_threshold}": g(n, "auc"),
                          "failure (%)": g(n, "failure", True), "faces": int(g(n, "count") or 0),
                          "NME + fusion (%)": g(n, "nme_fused", True)} for n in self._test_names],
                        [f"failure: NME > {self.hparams.failure_threshold}; faces = images or video frames"]
                        + [f"{n}: detector-box protocol, {int(g(n, 'detector_misses'))} faces missed by the detector "
                           "(a photo is then cropped from its landmark box, a video frame from the previous "
                           "prediction)" for n in self._test_names
                           if g(n, "detector_misses") is not None])]
        protocols = {n: ("detector box" if g(n, "detector_misses") is not None else "ground-truth box")
                     for n in self._test_names}
        for protocol in ("ground-truth box", "detector box"):
            names = [n for n in self._test_names if protocols[n] == protocol]
            how = ("faces cropped from their ground-truth landmark box" if protocol == "ground-truth box" else
                   "faces cropped from the MTCNN detection (then from the prediction), as infer does")
            lower = {_base_name(n): n for n in names}
            if any(k in lower for k in ("common", "challenging", "full")):
                row = {"Method": method, "Training Data": self.hparams.training_data, "protocol": protocol}
                for col in ("Common", "Challenging", "Full"):
                    n = lower.get(col.lower()) or lower.get(f"{col.lower()} set")
                    row[col if col != "Full" else "Full Set"] = g(n, "nme", True) if n else None
                tables.append(Table(f"Table 3.3 layout: NME (%) on 300-W ({norm}), {protocol}",
                                    ["Method", "Training Data", "protocol", "Common", "Challenging", "Full Set"],
                                    [row], [how]))
            subsets = {_subset_number(n): n for n in names if _subset_number(n)}
            if subsets:
                row = {"Method": method, "Training Set": self.hparams.training_data, "protocol": protocol}
                row_f = {**row, "Method": f"{method} + flow fusion"}
                for k in (1, 2, 3):
                    n = subsets.get(k)
                    row[f"Subset-{k}"] = g(n, "nme", True) if n else None
                    row_f[f"Subset-{k}"] = g(n, "nme_fused", True) if n else None
                rows = [row] + ([row_f] if any(row_f[f"Subset-{k}"] is not None for k in (1, 2, 3)) else [])
                notes = [how] + [f"{subsets[k]}: {int(g(subsets[k], 'detector_misses'))} of "
                                 f"{int(g(subsets[k], 'count'))} frames missed by MTCNN (cropped from the previous "
                                 "prediction)" for k in sorted(subsets) if g(subsets[k], "detector_misses") is not None]
                tables.append(Table(f"Table 3.2 layout: NME (%) on 300-VW ({norm}), {protocol}",
                                    ["Method", "Training Set", "protocol", "Subset-1", "Subset-2", "Subset-3"], rows,
                                    notes))
        videos = [n for n in self._test_names if g(n, "sdd") is not None]
        if videos:
            tables.append(Table("Stability (Eqs. 3.2–3.3, ×100, mean over landmarks, coordinates and videos)",
                                ["test set", "protocol", "STD", "SDD", "jitter", "STD + fusion", "SDD + fusion",
                                 "jitter + fusion"],
                                [{"test set": n, "protocol": "detector box" if g(n, "detector_misses") is not None
                                  else "ground-truth box", "STD": g(n, "std", True), "SDD": g(n, "sdd", True),
                                  "jitter": g(n, "jitter", True), "STD + fusion": g(n, "std_fused", True),
                                  "SDD + fusion": g(n, "sdd_fused", True),
                                  "jitter + fusion": g(n, "jitter_fused", True)}
                                 for n in videos],
                                ["fusion: pyramidal Lucas–Kanade + forward–backward check, Eq. 3.12",
                                 "STD measures jitter only for an unmoved face (e.g. pseudo_static); on moving videos "
                                 "it includes the motion — read SDD there",
                                 "jitter: mean ‖p(t+1) − 2p(t) + p(t−1)‖ / d over frames and points (label-free)"]))
        return tables

    # ---------------------------------------------------------------------------------------------- inference
    def _predict_from_box(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Landmarks (image pixels) from a face box, re-cropped ``refine_iters`` times from the predicted
        landmark box (the training crops are landmark boxes)."""
        pts = None
        for _ in range(max(1, self.hparams.refine_iters)):
            m = crop_transform(box if pts is None else landmark_box(pts), self.size, self.hparams.margin)
            crop = torch.from_numpy(warp_crop(image, m, self.size)).permute(2, 0, 1).float()[None] / 255.0
            pred = self.net(crop.to(self.device))[0].double().cpu().numpy() * (self.size - 1)
            pts = apply_affine(invert_affine(m), pred)
        return pts

    def track_frames(self, frames, choose, fusion: FlowFusion | None = None):
        """Landmarks on a stream of frames, the way both ``infer`` and the 300-VW detector-box protocol run, one
        frame at a time: ``choose(t, frame, current_box)`` gives frame t's face box (a detection) or None; with a box
        the crop comes from it, without one from the previous frame's landmarks (:func:`next_box`, kept within
        ½–2× the last detected face size); each crop is refined ``refine_iters`` times; ``fusion`` (Eq. 3.12) runs
        online. Yields (frame, detection 68×2, fused 68×2 or None, detected)."""
        online = fusion.online() if fusion is not None else None
        cur = ref = None
        for t, frame in enumerate(frames):
            box = choose(t, frame, cur)
            if box is not None:
                cur = ref = np.asarray(box, dtype=np.float64)
            elif cur is None:
                raise UserError("no face box for the first frame (give a box or a frame where the face is found)")
            pts = self._predict_from_box(frame, cur)
            yield frame, pts, (online.update(frame, pts)[0] if online is not None else None), box is not None
            cur = next_box(pts, ref)

    def predict_track(self, frames, choose, fusion: FlowFusion | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """:meth:`track_frames` collected: (per-frame detections T×68×2, fused T×68×2 or None, detected T)."""
        rows = [(pts, fused, hit) for _, pts, fused, hit in self.track_frames(frames, choose, fusion)]
        if not rows:
            raise UserError("no frames to predict")
        det, fused, hit = zip(*rows)
        return np.stack(det), (np.stack(fused) if fusion is not None else None), np.array(hit)

    def predict_detected_video(self, video: Path, numbers: list[int], boxes: np.ndarray, gt: np.ndarray,
                               fusion: FlowFusion | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The annotated frames ``numbers`` of ``video`` decoded one at a time; frame t's box is ``boxes[t]`` (NaN:
        missed — the previous prediction's box, or for a missed first frame its ground-truth landmark box)."""
        wanted = set(numbers)
        stream = (f for k, f in enumerate(iter_video(video, max_frames=max(numbers)), start=1) if k in wanted)

        def choose(t: int, frame: np.ndarray, cur):
            if np.isfinite(boxes[t]).all():
                return boxes[t]
            return landmark_box(gt[0]) if cur is None else None

        det, fused, hit = self.predict_track(stream, choose, fusion)
        if len(det) != len(numbers):
            raise UserError(f"{video}: annotations up to frame {max(numbers)} but the video is shorter")
        hit = hit & np.isfinite(boxes[:, 0])
        return det, fused, hit

    def _detect_boxes(self, image: np.ndarray, mtcnn_dir: str | None) -> np.ndarray:
        from shared.face.mtcnn import load_mtcnn

        faces = load_mtcnn(mtcnn_dir, "give infer_options.box=[x0,y0,x1,y1] or infer_options.mtcnn_dir")(image)
        return faces.boxes[np.argsort(-(faces.boxes[:, 2] - faces.boxes[:, 0]))] if len(faces) else np.zeros((0, 4))

    @staticmethod
    def draw(image: np.ndarray, faces: list[np.ndarray]) -> np.ndarray:
        import cv2

        out = image.copy()
        r = max(1, round(min(image.shape[:2]) / 200))
        for pts in faces:
            for x, y in pts:
                cv2.circle(out, (int(round(x * 16)), int(round(y * 16))), r * 16, (0, 255, 0), -1, cv2.LINE_AA, 4)
        return out

    def infer(self, input: Path, output: Path, box: list[float] | None = None, mtcnn_dir: str | None = None,
              max_faces: int = 1, fuse: bool = True, max_frames: int | None = None) -> None:
        """Image (or folder of images) → annotated image(s) + ``.pts`` per face + json; video → annotated video +
        json of per-frame points (first-frame MTCNN box, then the previous frame's landmarks; flow fusion of
        Eq. 3.12 when ``fuse``)."""
        input, output = Path(input), Path(output)
        if input.is_dir():
            files = sorted(p for p in input.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            if not files:
                raise UserError(f"no images in {input}")
            dests = dict(zip(files, destinations(files, input, output, ".png")))
            failures = each_input(files, lambda f: self.infer(f, dests[f], box, mtcnn_dir, max_faces, fuse,
                                                              max_frames), progress="landmarks", unit="img")
            return raise_failures(failures, len(files))
        if output.parent.resolve() == input.parent.resolve() and output.stem == input.stem:
            raise UserError(f"output {output} would put {output.stem}.pts / {output.stem}.json beside the input "
                            f"{input.name}, where its own annotations live; choose another name or folder")
        suffix = input.suffix.lower()
        if suffix in VIDEO_EXTS:
            return self._infer_video(input, output, box, mtcnn_dir, fuse, max_frames)
        if suffix not in IMAGE_EXTS:
            raise UserError(f"unsupported input {input} (an image, a folder of images or a video)")
        if output.suffix.lower() not in IMAGE_EXTS:
            raise UserError(f"output must be an image file name (.png/.jpg), got {output}")
        image = read_image(input)
        boxes = np.array([box], dtype=np.float64) if box is not None else self._detect_boxes(image, mtcnn_dir)
        if len(boxes) == 0:
            raise UserError(f"no face found in {input} (give infer_options.box=[x0,y0,x1,y1])")
        faces = [self._predict_from_box(image, b) for b in boxes[:max_faces]]
        write_image(output, self.draw(image, faces))
        for k, pts in enumerate(faces):
            write_pts(output.with_name(f"{output.stem}{'' if k == 0 else f'_{k}'}.pts"), pts)
        atomic_write_text(output.with_suffix(".json"), json.dumps(
            {"input": str(input), "faces": [{"box": [float(v) for v in b], "points": p.round(3).tolist()}
                                            for b, p in zip(boxes, faces)]}) + "\n")

    def _infer_video(self, input: Path, output: Path, box, mtcnn_dir, fuse: bool, max_frames: int | None) -> None:
        """Landmarks on every frame: each frame's crop comes from the face MTCNN finds in it (or the given box),
        else from the previous frame's landmarks (kept within ½–2× the last detected face size, so a detector
        that under- or over-estimates the face cannot shrink or grow the track away); optional flow fusion."""
        if output.suffix.lower() not in VIDEO_EXTS:
            raise UserError(f"output must be a video file name (.mp4), got {output}")
        fps, n, _ = open_video(input)
        from tqdm import tqdm

        def choose(t: int, frame: np.ndarray, cur):
            if t == 0:
                if box is not None:
                    return np.array(box, dtype=np.float64)
                found = self._detect_boxes(frame, mtcnn_dir)
                if len(found) == 0:
                    raise UserError(f"no face found in the first frame of {input} (give infer_options.box)")
                return found[0]
            if box is not None:  # a given box: MTCNN is not used, the crop follows the landmarks
                return None
            found = self._detect_boxes(frame, mtcnn_dir)  # MTCNN on every frame: the face nearest the track
            return nearest_box(found, cur) if len(found) else None

        # streamed: frames are decoded, tracked (online fusion) and encoded one at a time; only the points are kept
        fusion = self.fusion() if fuse else None
        frames = tqdm(iter_video(input, max_frames), desc="landmarks", unit="frame",
                      total=min(n, max_frames or n) if n else None)
        det, fused = [], []

        def drawn():
            for frame, pts, f_pts, _ in self.track_frames(frames, choose, fusion):
                det.append(pts)
                fused.append(pts if f_pts is None else f_pts)
                yield self.draw(frame, [fused[-1]])

        write_video(output, drawn(), fps=fps)
        atomic_write_text(output.with_suffix(".json"), json.dumps(
            {"input": str(input), "fps": fps, "fused": fusion is not None and len(det) > 1,
             "points": np.round(np.stack(fused), 3).tolist(), "detections": np.round(np.stack(det), 3).tolist()})
            + "\n")


def _side(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def nearest_box(boxes: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Of several face boxes, the one whose centre is closest to ``prev``'s (the face being tracked)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return boxes[int(np.argmin(np.linalg.norm(centres - (prev[:2] + prev[2:]) / 2, axis=1)))]


def next_box(points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The next frame's crop box from this frame's landmarks: their tight box, its side kept within ½–2× the side of
    the reference (detected or given) face box."""
    lb = landmark_box(points)
    side, ref_side = _side(lb), _side(ref)
    if 0.5 * ref_side <= side <= 2.0 * ref_side:
        return lb
    half = np.clip(side, 0.5 * ref_side, 2.0 * ref_side) / 2
    c = (lb[:2] + lb[2:]) / 2
    return np.concatenate([c - half, c + half])
