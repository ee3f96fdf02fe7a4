"""The single-image super-resolution LightningModule (Ch. 4 CAJNN training/eval; reused by Ch. 5 baselines).

Batches are dicts with ``lr`` and ``hr`` in [0, 1]. Validation/test report PSNR/SSIM on MATLAB Y with
``crop_border = scale`` on quantised outputs (the field's convention), optionally with the x8 self-ensemble.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from shared.degradations import self_ensemble
from shared.io import IMAGE_EXTS, image_to_tensor, list_files, read_image, tensor_to_image, write_image
from shared.losses import make_pixel_loss
from shared.metrics import PSNR, SSIM
from shared.report import Table


def make_optimizer(params, name: str = "adam", lr: float = 2e-4, betas=(0.9, 0.99), weight_decay: float = 0.0,
                   momentum: float = 0.9):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} (adam | adamw | sgd)")


def lr_factor(step: int, name: str | None, period: int, eta_ratio: float, warmup: int = 0) -> float:
    """Multiplicative learning-rate factor at ``step``: cosine annealing (restarting every ``period`` steps for
    ``cosine_restarts``) from 1 down to ``eta_ratio`` = eta_min / base lr, times a linear warm-up over ``warmup``."""
    import math

    if name in ("cosine_restarts", "cosine"):
        t = step % period if name == "cosine_restarts" else min(step, period)
        f = eta_ratio + (1 - eta_ratio) * (1 + math.cos(math.pi * t / period)) / 2
    else:
        f = 1.0
    if warmup > 0:
        f *= min(1.0, (step + 1) / warmup)
    return f


def make_scheduler(optimizer, name: str | None = "cosine_restarts", period: int = 250_000, eta_min: float = 1e-7,
                   milestones=(), gamma: float = 0.5, warmup_steps: list[int] | int = 0):
    """Per-step schedules: ``cosine_restarts`` (restart every ``period`` iterations, Ch. 4/6), ``cosine``, ``step``
    or None; ``warmup_steps`` (one value, or one per parameter group) adds a linear warm-up."""
    warm_list = warmup_steps if isinstance(warmup_steps, list | tuple) else [warmup_steps]
    if not name and not any(warm_list):
        return None
    if name not in (None, "cosine_restarts", "cosine", "step"):
        raise ValueError(f"unknown scheduler {name!r} (cosine_restarts | cosine | step | null)")
    if name == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
        return {"scheduler": sched, "interval": "step"}
    groups = optimizer.param_groups
    warm = warmup_steps if isinstance(warmup_steps, list | tuple) else [warmup_steps] * len(groups)
    lambdas = [
        (lambda step, r=eta_min / g["lr"], w=w: lr_factor(step, name, period, r, w)) for g, w in zip(groups, warm)
    ]
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return {"scheduler": sched, "interval": "step"}


def log_image_strip(module: pl.LightningModule, key: str, images: list[Tensor]) -> None:
    """Log 3×H×W images side by side (e.g. bicubic | output | ground truth) to every logger that takes images."""
    strip = torch.cat([im.detach().float().clamp(0, 1).cpu() for im in images], dim=-1)
    for lg in module.loggers:
        if hasattr(lg, "log_image"):
            lg.log_image(key=key, images=[tensor_to_image(strip)], step=module.global_step)
        elif hasattr(getattr(lg, "experiment", None), "add_image"):
            lg.experiment.add_image(key, strip, module.global_step)


class SRModule(pl.LightningModule):
    def __init__(self, net: nn.Module, scale: int = 4, loss: str = "l1", loss_reduction: str = "mean",
                 optimizer: dict | None = None, scheduler: dict | None = None, y_channel: bool = True,
                 crop_border: int | None = None, self_ensemble_test: bool = False, log_images: int = 2,
                 infer_tile: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])
        self.loss_fn = make_pixel_loss(loss, loss_reduction)
        border = scale if crop_border is None else crop_border
        self.val_psnr, self.val_ssim = PSNR(border, y_channel), SSIM(border, y_channel)
        self.test_metrics = nn.ModuleList()
        self._test_names: list[str] = []

    def forward(self, lr: Tensor) -> Tensor:
        return self.net(lr)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.loss_fn(self.net(batch["lr"]), batch["hr"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["lr"].shape[0])
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

    # ---- test: one PSNR/SSIM pair per test dataloader (set × JPEG quality)
    def on_test_start(self) -> None:
        dm = self.trainer.datamodule
        names = list(getattr(dm, "test_names", []) or [])
        n = len(self.trainer.test_dataloaders) if isinstance(self.trainer.test_dataloaders, list) else 1
        self._test_names = names if len(names) == n else [f"set{i}" for i in range(n)]
        border = self.hparams.scale if self.hparams.crop_border is None else self.hparams.crop_border
        self.test_metrics = nn.ModuleList(
            nn.ModuleList([PSNR(border, self.hparams.y_channel), SSIM(border, self.hparams.y_channel)])
            for _ in range(n)
        ).to(self.device)

    def predict_sr(self, lr: Tensor) -> Tensor:
        if self.hparams.self_ensemble_test:
            return self_ensemble(self.net, lr)
        return self.net(lr)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        sr = self.predict_sr(batch["lr"]).clamp(0, 1)
        p, s = self.test_metrics[dataloader_idx]
        p.update(sr, batch["hr"])
        s.update(sr, batch["hr"])
        name = self._test_names[dataloader_idx]
        self.log_dict({f"test/{name}/psnr": p, f"test/{name}/ssim": s}, batch_size=1, add_dataloader_idx=False)

    def report_tables(self, results: list[dict]) -> list[Table]:
        merged = {k: v for r in results for k, v in r.items()}
        rows = []
        for name in self._test_names:
            rows.append({"test set": name, "PSNR (Y)": merged.get(f"test/{name}/psnr"),
                         "SSIM (Y)": merged.get(f"test/{name}/ssim")})
        params = sum(p.numel() for p in self.net.parameters())
        title = f"{type(self.net).__name__} ×{self.hparams.scale} ({params / 1e6:.2f}M params)"
        notes = [f"PSNR/SSIM on MATLAB Y, crop border {self.hparams.crop_border or self.hparams.scale}",
                 f"self-ensemble x8: {'on' if self.hparams.self_ensemble_test else 'off'}"]
        return [Table(title, ["test set", "PSNR (Y)", "SSIM (Y)"], rows, notes)]

    def configure_optimizers(self):
        opt = make_optimizer(self.net.parameters(), **(self.hparams.optimizer or {}))
        sched = make_scheduler(opt, **(self.hparams.scheduler or {"name": None}))
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    # ---- inference on the user's own images
    def infer(self, input: Path, output: Path, suffix: str = ".png") -> None:
        files = list_files(input, IMAGE_EXTS)
        single = input.is_file()
        if not files:
            from shared.errors import UserError

            raise UserError(f"no images found in {input}")
        for f in tqdm(files, desc="super-resolving", unit="img"):
            lr = image_to_tensor(read_image(f))[None].to(self.device)
            sr = self.predict_sr(lr)[0]
            dest = output if single and output.suffix else output / (f.relative_to(input).with_suffix(suffix)
                                                                    if not single else f.stem + suffix)
            write_image(dest, tensor_to_image(sr))
