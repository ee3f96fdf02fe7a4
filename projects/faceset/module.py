"""Face-set LightningModule (chapter 2): backbone training with a margin softmax (A-Softmax m = 4 with λ
annealing, Sec. 2.2.2) on single faces, or multi-column aggregation training on sets of faces with the backbone
frozen and an angular softmax on the set descriptor (Sec. 2.3.1); evaluation protocols (Tables 2.1–2.3) and
gallery/probe inference."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from projects.faceset.model import FaceSetNet, MarginHead
from shared.checkpoint import extract_state_dict
from shared.datamodule import all_ranks
from shared.errors import TrainingDiverged, UserError, one_line
from shared.io import load_checkpoint_file
from shared.optim import make_optimizer, make_scheduler
from shared.report import Table


def load_backbone(net: FaceSetNet, path: str | Path) -> None:
    """Backbone weights from a Lightning checkpoint (``net.backbone.*``), a FaceSetNet state dict
    (``backbone.*``) or a bare backbone state dict."""
    sd = extract_state_dict(load_checkpoint_file(path))
    for prefix in ("net.backbone.", "backbone."):
        if any(k.startswith(prefix) for k in sd):
            sd = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
            break
    try:
        net.backbone.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise UserError(f"backbone checkpoint {path} does not fit {type(net.backbone).__name__}: "
                        f"{one_line(exc)[:300]}") from exc


class FaceSetModule(pl.LightningModule):
    """``stage=backbone``: faces → features → margin head → cross-entropy. ``stage=aggregation``: sets of faces →
    frozen backbone → aggregator (Eq. 2.1) → margin head on V_d → cross-entropy; only the aggregator learns."""

    def __init__(self, net: FaceSetNet, stage: str = "backbone", head: dict | None = None,
                 num_classes: int | None = None, optimizer: dict | None = None, scheduler: dict | None = None,
                 backbone_ckpt: str | None = None, plots: bool = True, save_features: bool = True,
                 milestone_epochs: list[float] | None = None) -> None:
        super().__init__()
        if stage not in ("backbone", "aggregation"):
            raise UserError(f"model.stage must be backbone or aggregation, got {stage!r}")
        self.net = net
        self.save_hyperparameters(ignore=["net"])
        if backbone_ckpt:
            load_backbone(net, backbone_ckpt)
        if stage == "aggregation":
            for p in self.net.backbone.parameters():
                p.requires_grad_(False)
        self.head: MarginHead | None = None
        if num_classes:
            self._make_head(num_classes)
        self._eval: dict[int, dict[str, list]] = {}
        self.tables: list[Table] = []

    def _make_head(self, n: int) -> None:
        dim = getattr(self.net.backbone, "embedding_dim", 512)
        self.head = MarginHead(dim, n, **(self.hparams.head or {}))

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.stage == "backbone" and getattr(self.net.backbone, "frozen", False):
            raise UserError(f"{type(self.net.backbone).__name__} is a frozen pretrained backbone: train the "
                            "aggregation on its features (model=dlib_multicolumn) or evaluate it "
                            "(python -m projects.faceset.eval model=dlib_resnet allow_untrained=true)")
        if stage == "fit" and self.head is None:
            n = getattr(self.trainer.datamodule, "num_classes", 0) if self.trainer else 0
            if not n:
                raise UserError("the margin head needs model.num_classes or a datamodule with identities")
            self._make_head(n)
            self.head.to(self.device)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.hparams.stage == "aggregation":
            self.net.backbone.eval()  # frozen: BatchNorm statistics (timm backbones) stay fixed too
        return self

    # ------------------------------------------------------------------------------------------------ training
    def descriptors(self, batch: dict) -> Tensor:
        if self.hparams.stage == "backbone":
            return self.net.embed(batch["image"])
        imgs = batch["images"]
        b, k = imgs.shape[:2]
        with torch.no_grad():
            feats = self.net.embed(imgs.flatten(0, 1)).view(b, k, -1)
        return self.net.aggregate(feats)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        labels = batch["label"]
        desc = self.descriptors(batch)
        logits = self.head(desc, labels, self.global_step)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at step {self.global_step} — lower model.optimizer.lr "
                                   "or pre-train with model.head.kind=softmax")
        with torch.no_grad():
            acc = (self.head(desc).argmax(1) == labels).float().mean()  # plain (margin-free) logits
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True, batch_size=len(labels))
        return loss

    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch of this run (its data, batch, world size and accumulation)."""
        trainer = self.trainer
        _ = trainer.estimated_stepping_batches  # loads the training data (documented for configure_optimizers)
        n = trainer.num_training_batches
        if not math.isfinite(n) or n <= 0:
            raise UserError("model.milestone_epochs needs a training loader of known length")
        return max(1, math.ceil(n / max(1, trainer.accumulate_grad_batches)))

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = make_optimizer(params, **{"name": "sgd", "lr": 0.1, "weight_decay": 5e-4,
                                        **(self.hparams.optimizer or {})})
        sched_cfg = {"name": None, **(self.hparams.scheduler or {})}
        if self.hparams.milestone_epochs:  # decay points in epochs → steps of this run (any data size, any world)
            per_epoch = self.steps_per_epoch()
            sched_cfg["milestones"] = [int(round(e * per_epoch)) for e in self.hparams.milestone_epochs]
        sched = make_scheduler(opt, **sched_cfg)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    # ----------------------------------------------------------------------------------------- evaluation
    def _protocols(self, kind: str) -> list:
        dm = self.trainer.datamodule
        return dm.val_protocols if kind == "val" else dm.test_protocols

    def _collect(self, batch: dict, idx: int) -> None:
        store = self._eval.setdefault(idx, {"index": [], "feats": [], "feats_u": [], "detected": []})
        store["index"].append(batch["index"].cpu())
        store["detected"].append(batch["detected"].cpu())
        if "feature" in batch:  # cached per-face features (data.features_dir)
            dim = getattr(self.net.backbone, "embedding_dim", batch["feature"].shape[1])
            if batch["feature"].shape[1] != dim:
                raise UserError(f"cached features are {batch['feature'].shape[1]}-d, the backbone gives {dim}-d")
            store["feats"].append(batch["feature"].float().cpu())
            if "feature_unaligned" in batch:
                store["feats_u"].append(batch["feature_unaligned"].float().cpu())
            return
        store["feats"].append(self.net.embed(batch["image"]).float().cpu())
        if "unaligned" in batch:
            store["feats_u"].append(self.net.embed(batch["unaligned"]).float().cpu())

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def _gathered(self, idx: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        local = {k: torch.cat(v) if v else None for k, v in self._eval.get(idx, {}).items()}
        parts = all_ranks(local)
        index = torch.cat([p["index"] for p in parts if p and p.get("index") is not None])
        order = torch.argsort(index)

        def cat(key):
            vals = [p[key] for p in parts if p and p.get(key) is not None]
            return torch.cat(vals)[order].numpy() if vals else None

        return cat("feats"), cat("feats_u"), cat("detected").astype(bool)

    def _aggregate(self, feats: Tensor, mask: Tensor) -> Tensor:
        with torch.no_grad():
            return self.net.aggregate(feats.to(self.device), mask.to(self.device)).float().cpu()

    def _run_protocols(self, kind: str) -> None:
        plot_dir = Path(self.trainer.default_root_dir) / "plots" if self.hparams.plots else None
        tables, logs = [], {}
        for i, proto in enumerate(self._protocols(kind)):
            if i not in self._eval and self.trainer.world_size == 1:
                continue
            feats, feats_u, detected = self._gathered(i)
            if kind == "test" and self.hparams.save_features and self.trainer.is_global_zero:
                self._save_features(proto.name, feats, feats_u, detected)
            if plot_dir is not None and kind == "test":
                plot_dir.mkdir(parents=True, exist_ok=True)
            metrics, t = proto.evaluate(feats, feats_u, detected, self._aggregate,
                                        plot_dir if kind == "test" else None)
            tables += t
            logs.update({f"{kind}/{proto.name}/{k}": float(v) for k, v in metrics.items()})
            if i == 0 and kind == "val":
                logs.update({f"val/{k}": float(v) for k, v in metrics.items()})
        self._eval = {}
        if logs:
            self.log_dict({k: torch.tensor(v) for k, v in logs.items()}, sync_dist=False)
        if kind == "test":
            self.tables = tables

    def _save_features(self, name: str, feats: np.ndarray, feats_u: np.ndarray | None, detected: np.ndarray) -> None:
        """Per-face features of a test protocol, in dataset order: ``<run dir>/features/<name>.npz``."""
        import io

        from shared.io import atomic_write_bytes

        buf = io.BytesIO()
        extra = {"feats_unaligned": feats_u} if feats_u is not None else {}
        np.savez(buf, feats=feats, detected=detected, **extra)
        atomic_write_bytes(Path(self.trainer.default_root_dir) / "features" / f"{name}.npz", buf.getvalue())

    def on_validation_epoch_start(self) -> None:
        self._eval = {}

    def on_validation_epoch_end(self) -> None:
        self._run_protocols("val")

    def on_test_epoch_start(self) -> None:
        self._eval = {}

    def on_test_epoch_end(self) -> None:
        self._run_protocols("test")

    def report_tables(self, results: list[dict]) -> list[Table]:
        return self.tables

    # ------------------------------------------------------------------------------------------- inference
    def infer(self, input: Path, output: Path, probe: str | None = None, threshold: float = 0.5, top_k: int = 5,
              mtcnn_dir: str | None = None, align: bool = True, undetected: str = "unaligned",
              template: str = "auto", save_crops: str | None = None, batch_size: int = 32,
              video_stride: int = 5, min_track: int = 3, max_frames: int | None = None,
              mtcnn_cache: str | None = None, detector: str = "mtcnn") -> dict:
        """``gallery`` (= ``input``: identity folders, or one folder of images = one set, or a video = one set per
        face track) against ``probe`` (identity folders → one probe set each; a folder of images, an image or a
        comma-separated list → one set; a video → one set per face track): ranked identities with cosine scores,
        ``same``/``different`` at ``threshold``; JSON to ``output``. ``align``: MTCNN (weights ``mtcnn_dir``,
        None = the asset copy) finds the 5 points — or dlib (``detector=dlib``: its HOG detector and, with the ``dlib``
        template, its own 5-point chips); ``align=false`` takes images as aligned crops. ``template=auto``: the
        backbone's template (``dlib`` for dlib_resnet), else SphereFace's."""
        from projects.faceset.inference import run_inference

        return run_inference(self, Path(input), probe, Path(output), threshold=threshold, top_k=top_k, align=align,
                             mtcnn_dir=mtcnn_dir, undetected=undetected, template=template, save_crops=save_crops,
                             batch_size=batch_size, video_stride=video_stride, min_track=min_track,
                             max_frames=max_frames, mtcnn_cache=mtcnn_cache, detector=detector)
