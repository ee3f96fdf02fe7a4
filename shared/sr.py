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


def make_scheduler(optimizer, name: str | None = "cosine_restarts", period: int = 250_000, eta_min: float = 1e-7,
                   milestones=(), gamma: float = 0.5):
    """Per-step schedulers: ``cosine_restarts`` (restart every ``period`` iterations, Ch. 4/6), ``step``, None."""
    if not name:
        return None
    if name == "cosine_restarts":
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=period, eta_min=eta_min)
    elif name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=period, eta_min=eta_min)
    elif name == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    else:
        raise ValueError(f"unknown scheduler {name!r} (cosine_restarts | cosine | step | null)")
    return {"scheduler": sched, "interval": "step"}


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
        """Side-by-side bicubic-upsampled LR | SR | HR crops to loggers that take images (W&B, TensorBoard)."""
        up = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        strip = torch.cat([up[0], sr[0], hr[0]], dim=-1)
        for lg in self.loggers:
            if hasattr(lg, "log_image"):
                lg.log_image(key=f"val/sample_{idx}", images=[tensor_to_image(strip)], step=self.global_step)
            elif hasattr(getattr(lg, "experiment", None), "add_image"):
                lg.experiment.add_image(f"val/sample_{idx}", strip, self.global_step)

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
