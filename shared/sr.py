"""The single-image super-resolution LightningModule (Ch. 4 CAJNN training/eval; reused by Ch. 5 baselines).

Batches are dicts with ``lr`` and ``hr`` in [0, 1]. Validation/test report PSNR/SSIM on MATLAB Y with
``crop_border = scale`` on quantised outputs (the field's convention), optionally with the x8 self-ensemble. The
``bicubic`` baseline row is MATLAB bicubic upsampling (``shared.imresize``) — the same kernel that made the LR.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.datamodule import test_set_names
from shared.degradations import self_ensemble
from shared.errors import TrainingDiverged, UserError
from shared.imresize import imresize
from shared.inference import TiledRunner, precision_context, use_channels_last
from shared.io import (
    IMAGE_EXTS,
    comparison_crops,
    image_to_tensor,
    labelled_strip,
    list_files,
    read_image,
    tensor_to_image,
    write_image,
)
from shared.losses import make_pixel_loss
from shared.metrics import PSNR, SSIM
from shared.optim import make_optimizer, make_scheduler
from shared.outputs import destinations, each_input, raise_failures
from shared.report import Table

log = logging.getLogger(__name__)


def device_label(device: torch.device) -> str:
    """'cpu', or the GPU's name for CUDA devices (for the runtime notes of result tables)."""
    if device.type == "cuda":
        return f"cuda, {torch.cuda.get_device_name(device)}"
    return device.type


def timed_call(fn, x: Tensor) -> tuple[Tensor, float]:
    """``fn(x)`` and its wall time in seconds, synchronising CUDA before and after so the time is the GPU's."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    t0 = time.perf_counter()
    y = fn(x)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return y, time.perf_counter() - t0


def log_image_strip(module: pl.LightningModule, key: str, images: list[Tensor]) -> None:
    """Log 3×H×W images side by side (e.g. bicubic | output | ground truth) to every logger that takes images."""
    strip = torch.cat([im.detach().float().clamp(0, 1).cpu() for im in images], dim=-1)
    for lg in module.loggers:
        if hasattr(lg, "log_image"):
            lg.log_image(key=key, images=[tensor_to_image(strip)], step=module.global_step)
        elif hasattr(getattr(lg, "experiment", None), "add_image"):
            lg.experiment.add_image(key, strip, module.global_step)


def _split_name(name: str) -> tuple[str, int | None]:
    """``Set5_q10`` → ("Set5", 10); ``Set5`` → ("Set5", None) (names made by :class:`shared.srdata.SRDataModule`)."""
    m = re.fullmatch(r"(.*)_q(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


class SRModule(pl.LightningModule):
    """Single-image SR training/evaluation. Test rows per (set × JPEG quality): the network (``method``), its x8
    self-ensemble (``self_ensemble_test``) and parameter-free ``baselines`` (``bicubic``), all from one pass."""

    def __init__(self, net: nn.Module, scale: int = 4, method: str | None = None, loss: str = "l1",
                 loss_reduction: str = "mean", lr_weight: float = 0.0, optimizer: dict | None = None,
                 scheduler: dict | None = None, y_channel: bool = True, crop_border: int | None = None,
                 self_ensemble_test: bool = False, baselines: list[str] | None = None, log_images: int = 2,
                 infer_tile: int | str | None = "auto", infer_tile_overlap: int = 16,
                 infer_self_ensemble: bool = False, save_test_images: int = 0, infer_precision: str | None = None,
                 infer_channels_last: bool = True) -> None:
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])
        self.method = method or type(net).__name__
        self.loss_fn = make_pixel_loss(loss, loss_reduction)
        if lr_weight and getattr(net, "lr_out", None) is None:
            raise ValueError("lr_weight > 0 needs the network's clean-LR branch (model.net.lr_branch=true)")
        self.border = scale if crop_border is None else crop_border
        self.val_psnr, self.val_ssim = PSNR(self.border, y_channel), SSIM(self.border, y_channel)
        self.test_metrics = nn.ModuleList()
        self._test_names: list[str] = []
        self._rows: list[str] = []
        self._timing: dict[int, list[float]] = {}

    def forward(self, lr: Tensor) -> Tensor:
        return self.net(lr)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        bs = batch["lr"].shape[0]
        if self.hparams.lr_weight:
            aux = self.net(batch["lr"], return_aux=True)
            l_hr = self.loss_fn(aux["out"], batch["hr"])
            l_lr = self.loss_fn(aux["lr"], batch["lr_clean"])  # Eq. 4.7
            loss = l_hr + self.hparams.lr_weight * l_lr  # Eq. 4.8
            self.log_dict({"train/l_hr": l_hr, "train/l_lr": l_lr}, batch_size=bs)
        else:
            loss = self.loss_fn(self.net(batch["lr"]), batch["hr"])
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at step {self.global_step} — resume from an earlier "
                                   "checkpoint with a lower model.optimizer.lr")
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        sr = self.net(batch["lr"]).clamp(0, 1)
        self.val_psnr.update(sr, batch["hr"])
        self.val_ssim.update(sr, batch["hr"])
        if batch_idx < self.hparams.log_images:
            self._log_images(batch["lr"], sr, batch["hr"], batch_idx)
        self.log_dict({"val/psnr": self.val_psnr, "val/ssim": self.val_ssim}, prog_bar=True, batch_size=1)

    def _log_images(self, lr: Tensor, sr: Tensor, hr: Tensor, idx: int) -> None:
        """Bicubic-upsampled LR | SR | HR side by side (W&B, TensorBoard)."""
        up = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False)
        log_image_strip(self, f"val/sample_{idx}", [up[0], sr[0], hr[0]])

    # ---- test: PSNR/SSIM per (row, test dataloader); rows = baselines, the network, its self-ensemble
    def on_test_start(self) -> None:
        self._test_names = test_set_names(self.trainer)
        self._test_device = device_label(self.device)  # the module is back on the CPU when tables are written
        n = len(self._test_names)
        self._rows = [b.capitalize() for b in (self.hparams.baselines or [])] + [self.method]
        if self.hparams.self_ensemble_test:
            self._rows.append(f"{self.method} (self-ensembled)")
        y = self.hparams.y_channel
        self.test_metrics = nn.ModuleList(
            nn.ModuleList(nn.ModuleList([PSNR(self.border, y), SSIM(self.border, y)]) for _ in self._rows)
            for _ in range(n)
        ).to(self.device)
        self._timing = {i: {r: [0.0, 0] for r in self._rows} for i in range(n)}

    def predict_sr(self, lr: Tensor) -> Tensor:
        if self.hparams.infer_self_ensemble:
            return self_ensemble(self.net, lr)
        return self.net(lr)

    def _timed(self, fn, x: Tensor, slot: list) -> Tensor:
        y, seconds = timed_call(fn, x)
        slot[0] += seconds
        slot[1] += x.shape[0]
        return y

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        lr, hr = batch["lr"], batch["hr"]
        timing = self._timing[dataloader_idx]
        outs = {}
        for b in self.hparams.baselines or []:
            if b != "bicubic":
                raise ValueError(f"unknown baseline {b!r} (bicubic)")
            outs["Bicubic"] = imresize(lr, (hr.shape[-2], hr.shape[-1]))  # MATLAB bicubic, like the LR side
        outs[self.method] = self._timed(self.net, lr, timing[self.method])
        if self.hparams.self_ensemble_test:
            name = f"{self.method} (self-ensembled)"
            outs[name] = self._timed(lambda t: self_ensemble(self.net, t), lr, timing[name])
        for row, (p, s) in zip(self._rows, self.test_metrics[dataloader_idx], strict=True):
            sr = outs[row].clamp(0, 1)
            p.update(sr, hr)
            s.update(sr, hr)
        if batch_idx < self.hparams.save_test_images and self.trainer.is_global_zero:
            self._save_grid(outs, hr, f"{self._test_names[dataloader_idx]}_{batch_idx:03d}", lr)
        tag = self._test_names[dataloader_idx]
        p, s = self.test_metrics[dataloader_idx][self._rows.index(self.method)]
        self.log_dict({f"test/{tag}/psnr": p, f"test/{tag}/ssim": s}, batch_size=1, add_dataloader_idx=False)

    def _save_grid(self, outs: dict[str, Tensor], hr: Tensor, name: str, lr: Tensor | None = None) -> None:
        """Per test image: ``images/<name>.png``, every row's output and the ground truth side by side, labelled;
        and ``images/<name>_crops.png``, the centre of the input | each row | the ground truth, magnified."""
        panels = [(label, img[0]) for label, img in [*outs.items(), ("HR", hr)]]
        folder = Path(self.trainer.default_root_dir) / "images"
        write_image(folder / f"{name}.png", labelled_strip(panels))
        if lr is not None:
            crops = [("input", tensor_to_image(lr[0]))]
            crops += [("truth" if k == "HR" else k, tensor_to_image(v)) for k, v in panels]
            write_image(folder / f"{name}_crops.png", comparison_crops(crops))

    def on_test_epoch_end(self) -> None:
        self._results = {}
        for i, tag in enumerate(self._test_names):
            for row, (p, s) in zip(self._rows, self.test_metrics[i], strict=True):
                sec, n = self._timing[i].get(row, [0.0, 0])
                self._results[(tag, row)] = (p.compute().item(), s.compute().item(), sec if n else None, n)

    def report_tables(self, results: list[dict]) -> list[Table]:
        """Table 4.1 layout: one block of rows per JPEG quality (methods), columns = test sets (PSNR, SSIM)."""
        params = sum(p.numel() for p in self.net.parameters()) / 1e6
        sets = list(dict.fromkeys(_split_name(t)[0] for t in self._test_names))
        quals = list(dict.fromkeys(_split_name(t)[1] for t in self._test_names))
        runtime_set = "Set5" if "Set5" in sets else sets[0]
        cols = ["QF", "Method", "Runtime (s)", "Parameters (M)"] + [f"{s} {m}" for s in sets for m in ("PSNR", "SSIM")]
        rows = []
        runtime_images = None
        for q in quals:
            for r in self._rows:
                row = {"QF": q if q is not None else "–", "Method": r}
                baseline = r not in (self.method, f"{self.method} (self-ensembled)")
                row["Parameters (M)"] = None if baseline else round(params, 2)
                for s in sets:
                    tag = f"{s}_q{q}" if q is not None else s
                    if (tag, r) in self._results:
                        ps, ss, rt, n_img = self._results[(tag, r)]
                        row[f"{s} PSNR"], row[f"{s} SSIM"] = ps, ss
                        if s == runtime_set and not baseline:
                            row["Runtime (s)"] = rt
                            runtime_images = n_img
                rows.append(row)
        notes = [f"PSNR/SSIM on {'MATLAB Y' if self.hparams.y_channel else 'RGB'}, crop border {self.border}; "
                 f"Runtime (s) = total forward time over all {runtime_images or ''} images of {runtime_set}, like "
                 f"Table 4.1 ({self._test_device})",
                 "Bicubic = MATLAB bicubic upsampling of the JPEG-compressed LR input (the kernel that made the LR)"]
        if getattr(self.net, "long_skip", True) is False:
            notes.append("no long skip connection (Eq. 4.5): Table 4.4's caption describes its baseline as 'without "
                         "the long-range skip connection and ASPP'; we read every Table 4.4 column as trained without "
                         "it (the table does not list it per column)")
        return [Table(f"{self.method} ×{self.hparams.scale} (Table 4.1 layout)", cols, rows, notes)]

    def configure_optimizers(self):
        opt = make_optimizer(self.net.parameters(), **(self.hparams.optimizer or {}))
        sched = make_scheduler(opt, **(self.hparams.scheduler or {"name": None}))
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    # ---- inference on the user's own images
    def runner(self, max_memory_gb: float | None = None) -> TiledRunner:
        """Tiled inference (``infer_tile``: pixels, null, or auto = the largest tile that fits ``max_memory_gb``,
        measured on this network — ``shared.inference``)."""
        def probe(side: int) -> None:
            self.predict_sr(torch.zeros(1, 3, side, side, device=self.device))

        return TiledRunner(self.predict_sr, self.hparams.infer_tile, self.hparams.infer_tile_overlap,
                           self.hparams.scale, self.device, probe, out_planes=3, max_memory_gb=max_memory_gb)

    def infer(self, input: Path, output: Path, suffix: str = ".png", max_memory_gb: float = 4.0,
              dry_run: bool = False) -> None:
        """Images (PNG, JPEG, WebP, BMP, TIFF; gray and RGBA become RGB) → ×scale PNGs; large images go through
        overlapping tiles (``infer_tile``; auto keeps the process within ``max_memory_gb``), optionally
        self-ensembled (``infer_self_ensemble``). A folder with an unreadable image finishes the others and then
        fails in one line naming it. ``dry_run`` prints the plan per image and writes nothing."""
        files = list_files(input, IMAGE_EXTS)
        if not files:
            raise UserError(f"no images found in {input} (looked for {', '.join(sorted(IMAGE_EXTS))})")
        dests = dict(zip(files, destinations(files, input, output, suffix, IMAGE_EXTS)))
        use_channels_last(self.net, self.hparams.infer_channels_last)
        runner, s = self.runner(max_memory_gb), self.hparams.scale

        def one(f: Path) -> None:
            lr = image_to_tensor(read_image(f))[None].to(self.device)
            h, w = lr.shape[-2:]
            with precision_context(self.device, self.hparams.infer_precision):
                runner.to_image(lr, dests[f], f"{f} → {dests[f]}: {s * w}×{s * h}", dry_run)

        raise_failures(each_input(files, one, progress="super-resolving", unit="img"), len(files))
