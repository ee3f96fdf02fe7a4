"""ZSM LightningModule: Charbonnier reconstruction loss on all 2N−1 HR frames (Eq. 6.7) plus the optional
cyclic interpolation losses (GFI, Eq. 6.8-6.10); the official evaluation protocol (PSNR/SSIM on Y and RGB,
per-clip means, input vs interpolated positions, s/frame); tiled, windowed video inference."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn
from tqdm import tqdm

from shared.datamodule import test_set_names
from shared.errors import TrainingDiverged, UserError
from shared.inference import TiledRunner, precision_context, use_channels_last
from shared.io import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    atomic_dir,
    comparison_crops,
    encoder_bytes,
    encoder_lookahead,
    image_size,
    iter_frames,
    iter_video,
    list_files,
    open_video,
    tensor_to_image,
    write_image,
    write_video,
)
from shared.losses import CharbonnierLoss
from shared.metrics import psnr, ssim
from shared.ops.deform import ModulatedDeformConv2d
from shared.optim import make_optimizer, make_scheduler
from shared.report import Table
from shared.sr import device_label, log_image_strip, timed_call
from shared.tiling import tiled_forward, to_uint8

_KEYS = ("psnr", "ssim", "psnr_rgb", "ssim_rgb")


class STVSRMetric(torchmetrics.Metric):
    """Per-frame PSNR/SSIM on Y and RGB (no border crop) averaged within each clip, then over clips (the paper's
    mean of clip means), overall and separately for input-position (even output index) and interpolated
    (odd) frames. Frames of every DDP rank are gathered before averaging."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("clip", "interp", *_KEYS):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, sr: Tensor, hr: Tensor, clip: Tensor, score: Tensor) -> None:
        """sr, hr: B×T×3×H×W in [0, 1]; clip: B; score: B×T (bool)."""
        b, t = sr.shape[:2]
        keep = score.reshape(-1).bool().to(sr.device)
        if not keep.any():
            return
        fs, fh = sr.reshape(b * t, *sr.shape[2:])[keep], hr.reshape(b * t, *hr.shape[2:])[keep]
        self.psnr.append(psnr(fs, fh, 0, True).float())
        self.ssim.append(ssim(fs, fh, 0, True).float())
        self.psnr_rgb.append(psnr(fs, fh, 0, False).float())
        self.ssim_rgb.append(ssim(fs, fh, 0, False).float())
        dev = self.psnr[-1].device
        self.clip.append(clip.to(dev).view(b, 1).expand(b, t).reshape(-1)[keep])
        self.interp.append((torch.arange(t, device=dev) % 2 == 1).expand(b, t).reshape(-1)[keep])

    def compute(self) -> dict[str, Tensor]:
        def cat(x):
            return torch.cat(x) if isinstance(x, list) else x

        clip, interp = cat(self.clip), cat(self.interp)
        vals = {k: cat(getattr(self, k)) for k in _KEYS}

        def clip_mean(v: Tensor, sel: Tensor) -> Tensor:
            ids = clip[sel].unique()
            if ids.numel() == 0:
                return torch.tensor(float("nan"))
            return torch.stack([v[sel & (clip == c)].mean() for c in ids]).mean()

        everything = torch.ones_like(interp)
        out = {k: clip_mean(v, everything) for k, v in vals.items()}
        out["psnr_input"], out["psnr_interp"] = clip_mean(vals["psnr"], ~interp), clip_mean(vals["psnr"], interp)
        out["ssim_input"], out["ssim_interp"] = clip_mean(vals["ssim"], ~interp), clip_mean(vals["ssim"], interp)
        out["frames"] = torch.tensor(float(clip.numel()))
        return out


class ZSMModule(pl.LightningModule):
    def __init__(self, net: nn.Module, method: str = "ZSM", loss_eps: float = 1e-3, loss_reduction: str = "sum",
                 gfi_weights: tuple[float, float, float] = (1.0, 0.0, 0.0), optimizer: dict | None = None,
                 scheduler: dict | None = None, dcn_lr_mul: float = 1.0, dcn_warmup_steps: int = 0,
                 flip_test: bool = False, infer_window: int = 4, infer_tile: int | str | None = "auto",
                 infer_tile_overlap: int = 16, infer_precision: str | None = None, infer_channels_last: bool = True,
                 infer_tile_batch: int = 1, log_images: int = 1, save_test_images: int = 0) -> None:
        super().__init__()
        self.net = net
        self.save_hyperparameters(ignore=["net"])
        self.rec_loss = CharbonnierLoss(loss_eps, loss_reduction)
        if any(gfi_weights[1:]) and getattr(net, "lr_head", None) is None:
            raise ValueError("gfi_weights λ2/λ3 > 0 need the network's LR synthesis head (model.net.gfi=true)")
        self.val_metric = STVSRMetric()
        self.test_metrics = nn.ModuleList()
        self._test_names: list[str] = []
        self._timing: dict[int, list[float]] = {}

    def forward(self, lr: Tensor) -> Tensor:
        return self.net(lr)

    # ------------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        l1, l2, l3 = self.hparams.gfi_weights
        bs = batch["lr"].shape[0]
        logs = {}
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
        else:
            loss = l1 * self.rec_loss(self.net(batch["lr"]), batch["hr"])
        if not torch.isfinite(loss):
            offsets = [m.offset_abs_mean.item() for m in self.net.modules() if isinstance(m, ModulatedDeformConv2d)]
            worst = f"; largest mean |DCN offset| {max(offsets):.1f}" if offsets else ""
            raise TrainingDiverged(f"loss became {loss.item()} at step {self.global_step}{worst} — resume from an "
                                   "earlier checkpoint with a lower model.dcn_lr_mul, model.dcn_warmup_steps or "
                                   "model.net.max_offset")
        self.log_dict({**logs, "train/loss": loss}, prog_bar=True, batch_size=bs)
        return loss

    def configure_optimizers(self):
        opt_cfg = dict(self.hparams.optimizer or {})
        lr = opt_cfg.get("lr", 4e-4)
        dcn = [p for n, p in self.net.named_parameters() if "conv_offset_mask" in n]
        ids = {id(p) for p in dcn}
        groups = [{"params": [p for p in self.net.parameters() if id(p) not in ids]}]
        warm = [0]
        if dcn:
            groups.append({"params": dcn, "lr": lr * self.hparams.dcn_lr_mul})
            warm.append(self.hparams.dcn_warmup_steps)
        opt = make_optimizer(groups, **opt_cfg)
        sched = make_scheduler(opt, **{"name": None, **(self.hparams.scheduler or {})}, warmup_steps=warm)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    # ------------------------------------------------------------------------------------- validation/test
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
        if batch_idx < self.hparams.log_images and sr.shape[1] > 1:
            # an interpolated frame: blended bicubic | ZSM | ground truth
            blend = (batch["lr"][0, 0] + batch["lr"][0, 1]) / 2
            up = F.interpolate(blend[None], size=sr.shape[-2:], mode="bicubic", align_corners=False)[0]
            log_image_strip(self, f"val/sample_{batch_idx}", [up, sr[0, 1], batch["hr"][0, 1]])

    def on_validation_epoch_end(self) -> None:
        res = self.val_metric.compute()
        self.log_dict({"val/psnr": res["psnr"], "val/ssim": res["ssim"]}, prog_bar=True, sync_dist=False)
        self.val_metric.reset()

    def on_test_start(self) -> None:
        self._test_names = test_set_names(self.trainer)
        self._test_device = device_label(self.device)  # the module is back on the CPU when tables are written
        n = len(self._test_names)
        self.test_metrics = nn.ModuleList(STVSRMetric() for _ in range(n)).to(self.device)
        self._timing = {i: [0.0, 0.0] for i in range(n)}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        sr, seconds = timed_call(self._predict, batch["lr"])
        timing = self._timing[dataloader_idx]
        timing[0] += seconds
        timing[1] += sr.shape[0] * sr.shape[1]
        self.test_metrics[dataloader_idx].update(sr.clamp(0, 1), batch["hr"], batch["clip"], batch["score"])
        if batch_idx < self.hparams.save_test_images and self.trainer.is_global_zero:
            self._save_crops(batch["lr"], sr, batch["hr"], f"{self._test_names[dataloader_idx]}_{batch_idx:03d}")

    def _save_crops(self, lr: Tensor, sr: Tensor, hr: Tensor, name: str) -> None:
        """``images/<name>_crops.png``: an interpolated (in-between) frame of the window, magnified centre —
        the LR frame before it | bicubic + frame blend | this network | the ground truth."""
        from projects.zsm.model import BicubicBlend

        k = 1 if sr.shape[1] > 1 else 0  # the first interpolated frame
        base = BicubicBlend(4)(lr[:1].float())[0, k]
        panels = [("input", lr[0, k // 2]), ("bicubic+blend", base), (self.hparams.method, sr[0, k]),
                  ("truth", hr[0, k])]
        write_image(Path(self.trainer.default_root_dir) / "images" / f"{name}_crops.png",
                    comparison_crops([(label, tensor_to_image(img)) for label, img in panels]))

    def on_test_epoch_end(self) -> None:
        for i, (name, metric) in enumerate(zip(self._test_names, self.test_metrics, strict=True)):
            res = metric.compute()
            logs = {f"test/{name}/{k}": v for k, v in res.items()}
            seconds, frames = self._timing[i]
            logs[f"test/{name}/seconds"] = torch.tensor(seconds)
            logs[f"test/{name}/s_per_frame"] = torch.tensor(seconds / max(frames, 1))
            # metric values are already gathered over ranks (identical everywhere); the mean over ranks only
            # changes the timings, which are each rank's own
            self.log_dict(logs, sync_dist=True)
            metric.reset()

    def report_tables(self, results: list[dict]) -> list[Table]:
        m = {k: v for r in results for k, v in r.items()}
        method = self.hparams.method
        params = sum(p.numel() for p in self.net.parameters()) / 1e6
        g = lambda n, k: m.get(f"test/{n}/{k}")  # noqa: E731
        detail = Table(
            f"{method}: per test set ({params:.2f}M parameters)",
            ["test set", "PSNR-Y", "SSIM-Y", "PSNR-RGB", "SSIM-RGB", "PSNR-Y input pos.", "PSNR-Y interp. pos.",
             "frames", "s/frame"],
            [{"test set": n, "PSNR-Y": g(n, "psnr"), "SSIM-Y": g(n, "ssim"), "PSNR-RGB": g(n, "psnr_rgb"),
              "SSIM-RGB": g(n, "ssim_rgb"), "PSNR-Y input pos.": g(n, "psnr_input"),
              "PSNR-Y interp. pos.": g(n, "psnr_interp"), "frames": int(g(n, "frames") or 0),
              "s/frame": g(n, "s_per_frame")} for n in self._test_names],
            ["PSNR/SSIM per frame (uint8-rounded outputs, no border crop), averaged within each clip, then over clips",
             f"flip test: {'on' if self.hparams.flip_test else 'off'}; s/frame = forward time per output frame on "
             f"{self._test_device} (mean over DDP ranks)"],
        )
        vid = [n for n in self._test_names if "vid4" in n.lower()]
        vimeo = [n for n in self._test_names if "vimeo" in n.lower()]
        tables = [detail]
        if vid:
            n = vid[0]
            total = g(n, "seconds")
            tables.append(Table(f"Table 6.1 layout ({n})", ["method", "PSNR", "SSIM", "Parameters (M)",
                                                            "Total run time (s)", "Average run time (s/frame)"],
                                [{"method": method, "PSNR": g(n, "psnr"), "SSIM": g(n, "ssim"),
                                  "Parameters (M)": round(params, 2), "Total run time (s)": total,
                                  "Average run time (s/frame)": g(n, "s_per_frame")}]))
        if vimeo:
            cols = ["method"] + [f"{n} {k}" for n in vimeo for k in ("PSNR", "SSIM")]
            row = {"method": method}
            for n in vimeo:
                row[f"{n} PSNR"], row[f"{n} SSIM"] = g(n, "psnr"), g(n, "ssim")
            tables.append(Table("Table 6.2 layout", cols, [row]))
        return tables

    # ---------------------------------------------------------------------------------------------- inference
    def runner(self, max_memory_gb: float | None = None) -> TiledRunner:
        """Windows through overlapping LR tiles (``infer_tile``: pixels, null = whole frames, auto = the largest
        tile that fits ``max_memory_gb``, measured on this network as it runs — ``shared.inference``)."""
        win = max(2, self.hparams.infer_window)

        def probe(side: int) -> None:
            self._predict(torch.zeros(1, win, 3, side, side, device=self.device))

        return TiledRunner(self._predict, self.hparams.infer_tile, self.hparams.infer_tile_overlap, 4, self.device,
                           probe, out_planes=3 * (2 * win - 1), max_memory_gb=max_memory_gb,
                           batch=self.hparams.infer_tile_batch)

    def _forward_tiled(self, x: Tensor) -> Tensor:
        """One window, tiled as :meth:`runner` plans it, blended into one float tensor (tests, evaluation)."""
        plan = self.runner().plan(*x.shape[-2:])
        return tiled_forward(self._predict, x, plan.tile, self.hparams.infer_tile_overlap, 4,
                             self.hparams.infer_tile_batch)

    @staticmethod
    def _window_bytes(win: int, h: int, w: int) -> int:
        """What a window holds besides the network and the blending band: its 8-bit output frames and the one
        handed on (H×W×3), the two shared frames in float (the previous window's last, this window's last), the
        input frames."""
        hr = 16 * h * w * 3
        return 2 * win * hr + 2 * hr * 4 + win * 3 * h * w * 5

    def _window(self, x: Tensor, runner: TiledRunner, fixed: int, pending: Tensor | None) -> tuple[Tensor, Tensor]:
        """One window 1×t×3×h×w → its 2t−1 output frames as uint8 (CPU) and its last in float (the frame shared
        with the next window). ``pending``: the previous window's last frame in float, averaged with this window's
        first band by band before it is quantised (no third full float frame). ``fixed``: the bytes the tile plan
        counts besides the network (:meth:`_window_bytes` plus what the frames' consumer holds)."""
        t, (h, w) = 2 * x.shape[1] - 1, x.shape[-2:]
        body = torch.empty(t, 3, 4 * h, 4 * w, dtype=torch.uint8)
        last = torch.empty(3, 4 * h, 4 * w)

        def sink(row: int, rows: Tensor) -> None:
            n = rows.shape[-2]
            if pending is not None:
                body[0, :, row : row + n] = to_uint8((rows[0, 0].cpu() + pending[:, row : row + n]) / 2)
            for k in range(pending is not None, t):  # frame by frame: to_uint8's temporary is one frame's band
                body[k, :, row : row + n] = to_uint8(rows[0, k]).cpu()
            last[:, row : row + n] = rows[0, -1].cpu()

        with precision_context(self.device, self.hparams.infer_precision):
            runner.run(x, sink, fixed=fixed)
        return body, last

    def stream(self, frames: Iterable[np.ndarray], total: int | None = None, runner: TiledRunner | None = None,
               held: int = 0) -> Iterator[np.ndarray]:
        """Yield the 2N−1 output frames (H×W×3 uint8) of N input frames: windows of ``infer_window`` frames
        sharing one frame; the shared frame's two predictions are averaged (no seam). ``frames`` is read lazily,
        each frame once, and each window's output is finished band by band into 8-bit frames: memory holds one
        window, whatever the length of the video (``infer_precision``, ``infer_channels_last``: see
        ``shared.inference``). ``held``: bytes the consumer of the frames holds (a video encoder's queue), counted
        in the tile plan with the window's own."""
        runner = runner or self.runner()
        win = max(2, self.hparams.infer_window)
        it = iter(frames)
        chunk = list(itertools.islice(it, win))
        if len(chunk) < 2:
            raise UserError(f"need at least 2 input frames, got {len(chunk)}")
        use_channels_last(self.net, self.hparams.infer_channels_last)
        bar = tqdm(total=2 * total - 1 if total else None, desc="zooming", unit="frame")
        pending: Tensor | None = None
        while True:
            if any(f.shape != chunk[0].shape for f in chunk):
                raise UserError(f"frames of one video must have one size: {chunk[0].shape[:2]} and "
                                f"{next(f.shape[:2] for f in chunk if f.shape != chunk[0].shape)}")
            x = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float().div(255)[None].to(self.device)
            body, last = self._window(x, runner, self._window_bytes(win, *x.shape[-2:]) + held, pending)
            del x  # the next window's input and output are made before these names would be rebound
            for k in range(body.shape[0] - 1):  # by index: a loop variable would be a view keeping all of body
                bar.update()
                yield np.ascontiguousarray(body[k].permute(1, 2, 0).numpy())
            del body
            pending = last
            more = list(itertools.islice(it, win - 1))
            if not more:
                break
            chunk = [chunk[-1], *more]
        bar.update()
        bar.close()
        yield np.ascontiguousarray(to_uint8(pending).permute(1, 2, 0).numpy())

    def infer(self, input: Path, output: Path, fps: float | None = None, max_frames: int | None = None,
              max_memory_gb: float = 4.0, dry_run: bool = False) -> None:
        """LR, low-frame-rate video or frame folder → ×4 space, ×2 time. ``output`` with a video suffix gets an
        H.264 file (audio dropped), otherwise a folder of PNG frames ``00000.png`` … (an existing folder keeps its
        other files); either appears only when complete. Frames are decoded and encoded one window at a time;
        ``infer_tile=auto`` keeps the process within ``max_memory_gb``. ``dry_run`` prints the plan (output, tiles,
        memory) and writes nothing."""
        if input.is_file() and input.suffix.lower() in VIDEO_EXTS:
            in_fps, n, (w, h) = open_video(input)
            frames = iter_video(input, max_frames)
        else:
            files = list_files(input, IMAGE_EXTS)[: max_frames or None]
            if not files:
                raise UserError(f"no video or frames found at {input}")
            (w, h), in_fps, n, frames = image_size(files[0]), 25.0, len(files), iter_frames(files)
        if n is not None and max_frames:
            n = min(n, max_frames)
        if n is not None and n < 2:
            raise UserError(f"need at least 2 input frames, got {n}")
        out_fps = fps or 2 * in_fps
        runner = self.runner(max_memory_gb)
        win = max(2, self.hparams.infer_window)
        use_channels_last(self.net, self.hparams.infer_channels_last)
        # a video's encoder queues frames (x264's look-ahead): capped at a quarter of the budget, and on the CPU
        # counted in it, so a long 4K output stays inside max_memory_gb (its memory does not grow with the length)
        to_video = output.suffix.lower() in VIDEO_EXTS
        lookahead = encoder_lookahead(4 * w, 4 * h, int((max_memory_gb or 4.0) * 2**30) // 4) if to_video else None
        coder_bytes = encoder_bytes(4 * w, 4 * h, lookahead) if to_video else 0
        encoder = coder_bytes if self.device.type == "cpu" else 0  # on CUDA the budget is the GPU's
        with precision_context(self.device, self.hparams.infer_precision):
            plan = runner.plan(h, w, fixed=self._window_bytes(win, h, w) + encoder)
        frames_out = f"{2 * n - 1} frames" if n else "2N−1 frames"
        coder = ""
        if to_video:
            how = (f"look-ahead {lookahead} frames" if lookahead else
                   "no look-ahead, no B-frames (low memory, larger file)")
            coder = f"; H.264 {how}: {coder_bytes / 2**30:.2f} GiB"
        print(f"{input}: {n or '?'} frames {w}×{h} at {in_fps:.3g} fps → {output}: {frames_out} {4 * w}×{4 * h} at "
              f"{out_fps:.3g} fps; {plan.describe(h, w)}{coder}")
        if dry_run:
            return
        if to_video:
            write_video(output, self.stream(frames, n, runner, encoder), out_fps, lookahead=lookahead)
            return
        with atomic_dir(output) as tmp:
            for i, f in enumerate(self.stream(frames, n, runner)):
                write_image(tmp / f"{i:05d}.png", f)
