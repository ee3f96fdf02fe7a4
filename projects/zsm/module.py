"""ZSM LightningModule: Charbonnier reconstruction loss on all 2N−1 HR frames (Eq. 6.7) plus the optional
cyclic interpolation losses (GFI, Eq. 6.8-6.10); PSNR/SSIM on Y with the paper's per-clip averaging."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torchmetrics
from torch import Tensor, nn
from tqdm import tqdm

from shared.errors import UserError
from shared.io import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    list_files,
    read_image,
    read_video,
    tensor_to_image,
    write_image,
    write_video,
)
from shared.losses import CharbonnierLoss
from shared.metrics import psnr, ssim
from shared.report import Table
from shared.sr import make_optimizer, make_scheduler


class ClipMeanMetric(torchmetrics.Metric):
    """Per-frame PSNR/SSIM (Y, no border crop) averaged within each clip, then over clips (the paper's
    'mean of clip means'); frames of every DDP rank are gathered before averaging."""

    full_state_update = False

    def __init__(self, y_channel: bool = True, crop_border: int = 0) -> None:
        super().__init__()
        self.y_channel, self.crop_border = y_channel, crop_border
        for name in ("clip", "psnr", "ssim"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, sr: Tensor, hr: Tensor, clip: Tensor, score: Tensor) -> None:
        """sr, hr: B×T×3×H×W in [0, 1]; clip: B; score: B×T (bool)."""
        b, t = sr.shape[:2]
        flat_sr, flat_hr = sr.reshape(b * t, *sr.shape[2:]), hr.reshape(b * t, *hr.shape[2:])
        keep = score.reshape(-1).bool()
        if not keep.any():
            return
        self.psnr.append(psnr(flat_sr[keep], flat_hr[keep], self.crop_border, self.y_channel).float())
        self.ssim.append(ssim(flat_sr[keep], flat_hr[keep], self.crop_border, self.y_channel).float())
        self.clip.append(clip.view(b, 1).expand(b, t).reshape(-1)[keep].to(self.psnr[-1].device))

    def compute(self) -> dict[str, Tensor]:
        def cat(x):
            return torch.cat(x) if isinstance(x, list) else x

        clip, p, s = cat(self.clip), cat(self.psnr), cat(self.ssim)
        ids = clip.unique()
        per_p = torch.stack([p[clip == c].mean() for c in ids])
        per_s = torch.stack([s[clip == c].mean() for c in ids])
        return {"psnr": per_p.mean(), "ssim": per_s.mean(), "frames": torch.tensor(float(p.numel()))}


class ZSMModule(pl.LightningModule):
    def __init__(self, net: nn.Module, loss_eps: float = 1e-3, loss_reduction: str = "sum",
                 gfi_weights: tuple[float, float, float] = (1.0, 0.0, 0.0), optimizer: dict | None = None,
                 scheduler: dict | None = None, dcn_lr_mul: float = 1.0, y_channel: bool = True,
                 flip_test: bool = False, infer_window: int = 4) -> None:
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])
        self.rec_loss = CharbonnierLoss(loss_eps, loss_reduction)
        uses_gfi = any(gfi_weights[1:])
        if uses_gfi and getattr(net, "lr_head", None) is None:
            raise ValueError("gfi_weights λ2/λ3 > 0 need the network's LR synthesis head (model.net.gfi=true)")
        self.val_metric = ClipMeanMetric(y_channel)
        self.test_metrics = nn.ModuleList()
        self._test_names: list[str] = []

    def forward(self, lr: Tensor) -> Tensor:
        return self.net(lr)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        l1, l2, l3 = self.hparams.gfi_weights
        bs = batch["lr"].shape[0]
        if l2 or l3:
            aux = self.net(batch["lr"], return_aux=True)
            rec = self.rec_loss(aux["out"], batch["hr"])
            lr_gt = batch["lr_gt"]
            gfi1 = self.rec_loss(aux["lr_interp1"], lr_gt[:, 1::2])  # Eq. 6.8: frames 2, 4, 6
            loss = l1 * rec + l2 * gfi1
            logs = {"train/rec": rec, "train/gfi1": gfi1}
            if "lr_interp2" in aux:
                gfi2 = self.rec_loss(aux["lr_interp2"], lr_gt[:, 2:-1:2])  # Eq. 6.9: frames 3, 5
                loss = loss + l3 * gfi2
                logs["train/gfi2"] = gfi2
            self.log_dict(logs, batch_size=bs)
        else:
            loss = l1 * self.rec_loss(self.net(batch["lr"]), batch["hr"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def _predict(self, lr: Tensor) -> Tensor:
        if not self.hparams.flip_test:
            return self.net(lr)
        # official flip_test: identity, W-flip, H-flip and both, flipped back and averaged
        outs = [self.net(lr)]
        for dims in ((-1,), (-2,), (-2, -1)):
            outs.append(self.net(lr.flip(dims)).flip(dims))
        return torch.stack(outs).mean(0)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        sr = self._predict(batch["lr"]).clamp(0, 1)
        self.val_metric.update(sr, batch["hr"], batch["clip"], batch["score"])

    def on_validation_epoch_end(self) -> None:
        res = self.val_metric.compute()
        self.log_dict({"val/psnr": res["psnr"], "val/ssim": res["ssim"]}, prog_bar=True, sync_dist=False)
        self.val_metric.reset()

    def on_test_start(self) -> None:
        names = list(getattr(self.trainer.datamodule, "test_names", []) or [])
        loaders = self.trainer.test_dataloaders
        n = len(loaders) if isinstance(loaders, list) else 1
        self._test_names = names if len(names) == n else [f"set{i}" for i in range(n)]
        self.test_metrics = nn.ModuleList(ClipMeanMetric(self.hparams.y_channel) for _ in range(n)).to(self.device)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        sr = self._predict(batch["lr"]).clamp(0, 1)
        self.test_metrics[dataloader_idx].update(sr, batch["hr"], batch["clip"], batch["score"])

    def on_test_epoch_end(self) -> None:
        for name, metric in zip(self._test_names, self.test_metrics, strict=True):
            res = metric.compute()
            self.log_dict({f"test/{name}/psnr": res["psnr"], f"test/{name}/ssim": res["ssim"],
                           f"test/{name}/frames": res["frames"]}, sync_dist=False)
            metric.reset()

    def report_tables(self, results: list[dict]) -> list[Table]:
        merged = {k: v for r in results for k, v in r.items()}
        rows = [{"test set": n, "PSNR (Y)": merged.get(f"test/{n}/psnr"), "SSIM (Y)": merged.get(f"test/{n}/ssim"),
                 "frames": int(merged.get(f"test/{n}/frames", 0))} for n in self._test_names]
        params = sum(p.numel() for p in self.net.parameters())
        notes = ["PSNR/SSIM on MATLAB Y, no border crop, averaged per clip then over clips (Table 6.2 protocol)",
                 f"flip test: {'on' if self.hparams.flip_test else 'off'}"]
        return [Table(f"ZSM ({params / 1e6:.2f}M params)", ["test set", "PSNR (Y)", "SSIM (Y)", "frames"], rows,
                      notes)]

    def configure_optimizers(self):
        opt_cfg = dict(self.hparams.optimizer or {})
        lr = opt_cfg.get("lr", 4e-4)
        dcn = [p for n, p in self.net.named_parameters() if "conv_offset_mask" in n]
        ids = {id(p) for p in dcn}
        rest = [p for p in self.net.parameters() if id(p) not in ids]
        groups = [{"params": rest}]
        if dcn:
            groups.append({"params": dcn, "lr": lr * self.hparams.dcn_lr_mul})
        opt = make_optimizer(groups, **opt_cfg)
        sched = make_scheduler(opt, **(self.hparams.scheduler or {"name": None}))
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    # ---- inference on a user's video or frame folder
    def infer(self, input: Path, output: Path, fps: float | None = None, max_frames: int | None = None) -> None:
        """LR, low-frame-rate video/frames → ×4, ×2-frame-rate result. Windows of ``infer_window`` input frames
        with one frame of overlap; ``output`` ending in a video suffix gets an H.264 file, otherwise PNG frames."""
        if input.is_file() and input.suffix.lower() in VIDEO_EXTS:
            frames, in_fps = read_video(input, max_frames)
        else:
            files = list_files(input, IMAGE_EXTS)[: max_frames or None]
            if not files:
                raise UserError(f"no video or frames found at {input}")
            frames, in_fps = np.stack([read_image(f) for f in files]), 25.0
        n = len(frames)
        if n < 2:
            raise UserError(f"need at least 2 input frames, got {n}")
        win = max(2, self.hparams.infer_window)
        starts = list(range(0, max(n - 1, 1), win - 1))
        out_frames: list[np.ndarray] = []
        for s in tqdm(starts, desc="zooming", unit="window"):
            chunk = frames[s : s + win]
            if len(chunk) < 2:
                break
            x = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2).float().div(255)[None]
            y = self._predict(x.to(self.device))[0]
            first = 0 if not out_frames else 1  # the overlapping input frame was produced by the last window
            out_frames += [tensor_to_image(f) for f in y[first:]]
        if output.suffix.lower() in VIDEO_EXTS:
            write_video(output, out_frames, fps or 2 * in_fps)
        else:
            for i, f in enumerate(out_frames):
                write_image(output / f"{i:05d}.png", f)
