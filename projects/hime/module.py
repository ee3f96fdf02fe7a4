"""HIME LightningModule: HIME_rec (Charbonnier only) and HIME_P (Eq. 5.9: rec + adversarial + perceptual +
correlation) with two optimisers under manual optimisation; PSNR/SSIM on RGB (+ LPIPS) per setting and a result
table in the layout of Table 5.1; inference on the user's headshots with any number of reference photos."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor, nn

from projects.hime.data import fit_image
from projects.hime.macs import count_macs
from shared.checkpoint import load_weights
from shared.datamodule import test_set_names
from shared.errors import TrainingDiverged, UserError
from shared.imresize import imresize
from shared.inference import TiledRunner, precision_context, use_channels_last
from shared.io import (
    IMAGE_EXTS,
    image_to_tensor,
    labelled_strip,
    list_files,
    read_image,
    write_image,
)
from shared.losses import CharbonnierLoss, CorrelationLoss, VGGPerceptualLoss, ragan_losses
from shared.metrics import PSNR, SSIM, load_lpips
from shared.optim import make_optimizer, make_scheduler
from shared.outputs import destinations, each_input, raise_failures
from shared.report import Table
from shared.sr import device_label, log_image_strip, timed_call
from shared.tiling import tiled_forward

LOSS_TERMS = ("rec", "adv", "per", "cor")


def _no_closure() -> None:
    return None


log = logging.getLogger(__name__)


class HIMEModule(pl.LightningModule):
    """Training/evaluation of a HIME generator ``net`` (``net(lr, refs)``) and, when ``loss_weights.adv > 0``, a
    discriminator trained with the relativistic average GAN (Eq. 5.11–5.13).

    ``save_test_images`` writes the first N test images of each set as PNG strips (references | bicubic | output |
    ground truth) under the run directory's ``images/``. ``face_embedder`` adds the identity column of Table 5.1:
    the mean cosine distance between the embeddings of the output and of the ground truth — ``"auto"`` (the config's
    default) = dlib's embedder on the face chip (``shared.face.dlib_models.FaceChipEmbedder``) when dlib and its
    models are installed, else no column and a note saying why; ``"dlib"`` = required; None / ``"none"`` = off; or
    any module mapping N×3×H×W images in [0, 1] to N×D embeddings.

    ``loss_weights`` selects the loss set of Table 5.5: {rec} = HIME_rec, {rec, cor}, {rec, adv, per},
    {rec, adv, per, cor} = HIME_P; terms with weight 0 are not computed. ``init_weights`` (a checkpoint of this
    module or a bare network state dict) initialises the generator for fine-tuning. Batches are dicts with ``lr``
    (B×3×h×w), ``hr`` (B×3×sh×sw) and ``refs`` (B×n×3×sh×sw, n ≥ 0) in [0, 1].
    """

    def __init__(self, net: nn.Module, discriminator: nn.Module | None = None, method: str = "HIME",
                 loss_weights: dict[str, float] | None = None, rec_eps: float = 1e-3, cor_k: int = 3,
                 cor_dilation: int = 1, vgg_weights: str | None = None, vgg_layer: str = "conv5_4",
                 optimizer: dict | None = None, optimizer_d: dict | None = None, scheduler: dict | None = None,
                 lpips_backbone: str | None = None, lpips_net: str = "alex", baselines: list[str] | None = None,
                 log_images: int = 2, infer_suffix: str = ".png", init_weights: str | None = None,
                 face_embedder: nn.Module | None = None, save_test_images: int = 0, infer_tile: int | None = None,
                 infer_tile_overlap: int = 16, infer_precision: str | None = None,
                 infer_channels_last: bool = True) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = net
        if init_weights:  # fine-tuning (e.g. Fig. 5.19 b, GAN rows of Table 5.5) starts from trained weights
            load_weights(self, init_weights)
        self.save_hyperparameters(ignore=["net", "discriminator", "face_embedder"])
        weights = {"rec": 1.0, "adv": 0.0, "per": 0.0, "cor": 0.0, **(loss_weights or {})}
        unknown = set(weights) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)} (rec | adv | per | cor)")
        self.weights = weights
        if weights["adv"] > 0 and discriminator is None:
            raise ValueError("loss_weights.adv > 0 needs a discriminator (model.discriminator)")
        self.discriminator = discriminator if weights["adv"] > 0 else None
        self.rec_loss = CharbonnierLoss(rec_eps)
        self.cor_loss = CorrelationLoss(cor_k, cor_dilation)
        # frozen helper networks live outside the state dict (checkpoints hold only what is trained)
        self._frozen: dict[str, nn.Module] = {}
        if lpips_backbone:
            self._frozen["lpips"] = load_lpips(lpips_net, lpips_backbone)
        self._embedder_note = None
        if isinstance(face_embedder, str) or face_embedder is None:  # auto | dlib | none (see face_embedder docs)
            from shared.face.dlib_models import face_embedder as dlib_embedder

            kind = face_embedder
            face_embedder = dlib_embedder(kind)
            if face_embedder is None and kind == "auto":
                self._embedder_note = ("ID dist. not computed: dlib's face embedder is not installed (`make install` "
                                       "installs dlib-bin, `make assets` fetches its models; model.face_embedder=dlib "
                                       "makes it required)")
        if face_embedder is not None:  # identity preservation: 1 − cos(e(SR), e(HR)) with a face embedder
            self._frozen["embedder"] = face_embedder.eval().requires_grad_(False)
        self.scale = int(getattr(net, "scale", 4))
        self.val_psnr, self.val_ssim = PSNR(0, False), SSIM(0, False)
        self.val_lpips = torchmetrics.MeanMetric()
        self.test_metrics = nn.ModuleList()
        self._test_names: list[str] = []
        self._rows: list[str] = []
        self._settings: dict[int, tuple[int, int, int]] = {}
        self._timing: dict[int, list[float]] = {}
        self._results: dict[tuple[str, str], dict[str, float | None]] = {}

    def frozen(self, name: str) -> nn.Module:
        if name == "vgg" and name not in self._frozen:  # only training needs it (eval/infer run without the weights)
            self._frozen["vgg"] = VGGPerceptualLoss(self.hparams.vgg_weights, self.hparams.vgg_layer)
        return self._frozen[name].to(self.device)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.weights["per"] > 0:
            self.frozen("vgg")  # a missing VGG-19 file is reported before training starts

    def forward(self, lr: Tensor, refs: Tensor | None = None) -> Tensor:
        return self.net(lr, refs)

    def _packed(self, lr: Tensor, refs: Tensor | None) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """``lr`` with the references folded onto the LR grid (pixel_unshuffle) as extra channels, and the network on
        such a tensor — so a tile of it cuts the references into the matching s×-sized tiles."""
        s = self.scale
        if refs is None or refs.shape[1] == 0:
            return lr, lambda x: self.net(x, None)
        b, n, c, hh, ww = refs.shape
        if (hh, ww) != (lr.shape[-2] * s, lr.shape[-1] * s):
            raise UserError(f"references must be {s}× the input ({lr.shape[-2] * s}×{lr.shape[-1] * s}), got {hh}×{ww}")
        packed = torch.cat([lr, F.pixel_unshuffle(refs.reshape(b, n * c, hh, ww), s)], dim=1)

        def run(x: Tensor) -> Tensor:
            h, w = x.shape[-2:]
            return self.net(x[:, :3], F.pixel_shuffle(x[:, 3:], s).view(x.shape[0], n, c, h * s, w * s))

        return packed, run

    def runner(self, n_refs: int, max_memory_gb: float | None = None) -> TiledRunner:
        """Tiled inference with ``n_refs`` references (``infer_tile``: pixels, null, or auto = the largest tile that
        fits ``max_memory_gb``, measured on this network — ``shared.inference``)."""
        s = self.scale

        def probe(side: int) -> None:
            refs = torch.zeros(1, n_refs, 3, s * side, s * side, device=self.device)
            self.net(torch.zeros(1, 3, side, side, device=self.device), refs)

        fn = self._packed(torch.zeros(1, 3, 1, 1), torch.zeros(1, n_refs, 3, s, s))[1]
        return TiledRunner(fn, self.hparams.infer_tile, self.hparams.infer_tile_overlap, s, self.device, probe,
                           out_planes=3, max_memory_gb=max_memory_gb)

    def predict(self, lr: Tensor, refs: Tensor | None = None) -> Tensor:
        """The network on ``lr`` (B×3×h×w) and ``refs`` (B×n×3×sh×sw, or None), in overlapping LR tiles as
        :meth:`runner` plans them (``infer_tile_overlap`` px; the references cut into the matching s×-sized tiles) —
        the same result with memory bounded by the tile size (``shared.tiling``)."""
        packed, run = self._packed(lr, refs)
        plan = self.runner(0 if refs is None else refs.shape[1]).plan(*lr.shape[-2:])
        return tiled_forward(run, packed, plan.tile, self.hparams.infer_tile_overlap, self.scale)

    # ------------------------------------------------------------------------------------------- training
    def generator_losses(self, sr: Tensor, hr: Tensor, real_logits: Tensor | None = None) -> dict[str, Tensor]:
        """The weighted terms of Eq. 5.9 (only those with λ > 0) and their sum ``loss``. The adversarial term sees
        the discriminator through detached weights, so its gradient reaches the generator only."""
        w, terms = self.weights, {}
        if w["rec"]:
            terms["rec"] = self.rec_loss(sr, hr)
        if w["cor"]:
            terms["cor"] = self.cor_loss(sr, hr)  # Eq. 5.7–5.8
        if w["per"]:
            terms["per"] = self.frozen("vgg")(sr, hr)  # Eq. 5.10
        if w["adv"]:
            d = self.discriminator
            frozen = {n: p.detach() for n, p in d.named_parameters()}
            if real_logits is None:
                with torch.no_grad():
                    real_logits = d(hr)
            fake = torch.func.functional_call(d, frozen, (sr,))
            terms["adv"] = ragan_losses(real_logits.detach(), fake)[1]  # Eq. 5.11
        terms["loss"] = sum(w[k] * v for k, v in terms.items())
        return terms

    def training_losses(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """One objective whose gradient is, per network, that network's own loss: the generator's Eq. 5.9 (the
        discriminator fixed) plus the discriminator's Eq. 5.13 on the detached output (the generator fixed).

        One backward pass for both keeps every parameter used in each DDP step; it equals the sequential
        generator-then-discriminator update, whose discriminator step also scores the pre-update output.
        """
        sr = self.net(batch["lr"], batch.get("refs"))
        real = self.discriminator(batch["hr"]) if self.discriminator is not None else None
        terms = self.generator_losses(sr, batch["hr"], real)
        self._check("generator loss", terms["loss"])
        logs = {f"train/{k}": v.detach() for k, v in terms.items()}
        total = terms["loss"]
        if real is not None:
            loss_d = ragan_losses(real, self.discriminator(sr.detach()))[0]  # Eq. 5.13
            self._check("discriminator loss", loss_d)
            logs["train/loss_d"] = loss_d.detach()
            total = total + loss_d
        return total, logs

    def _check(self, name: str, value: Tensor) -> None:
        if not torch.isfinite(value):
            raise TrainingDiverged(f"{name} became {value.item()} at step {self.global_step} — resume from an "
                                   "earlier checkpoint with a lower model.optimizer.lr")

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        scheds = self.lr_schedulers()
        scheds = [] if scheds is None else scheds if isinstance(scheds, list) else [scheds]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        total, logs = self.training_losses(batch)
        self.manual_backward(total)
        opts[0].step()  # generator (Eq. 5.9); Lightning counts it, so global_step / max_steps count iterations
        for opt in opts[1:]:  # discriminator (Eq. 5.13): the same strategy step, not counted a second time
            self.trainer.strategy.optimizer_step(opt.optimizer, _no_closure)
        for s in scheds:
            s.step()
        self.log_dict(logs, prog_bar=True, batch_size=batch["lr"].shape[0])

    def configure_optimizers(self):
        opt_cfg = dict(self.hparams.optimizer or {"lr": 1e-4})
        sched_cfg = {"name": None, **(self.hparams.scheduler or {})}
        opts = [make_optimizer(self.net.parameters(), **opt_cfg)]
        if self.discriminator is not None:
            opts.append(make_optimizer(self.discriminator.parameters(), **dict(self.hparams.optimizer_d or opt_cfg)))
        scheds = [make_scheduler(o, **sched_cfg) for o in opts]
        if scheds[0] is None:
            return opts
        return opts, [s["scheduler"] for s in scheds]

    # ------------------------------------------------------------------------------------- validation/test
    def _lpips(self, sr: Tensor, hr: Tensor) -> Tensor:
        """Per-image LPIPS of uint8-rounded images (like PSNR/SSIM), inputs in [0, 1]."""
        q = lambda x: (x.clamp(0, 1) * 255).round() / 255 * 2 - 1  # noqa: E731
        return self.frozen("lpips")(q(sr), q(hr)).flatten()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        lr, hr = batch["lr"], batch["hr"]
        sr = self.net(lr, batch.get("refs")).clamp(0, 1)
        self.val_psnr.update(sr, hr)
        self.val_ssim.update(sr, hr)
        logs = {"val/psnr": self.val_psnr, "val/ssim": self.val_ssim}
        if "lpips" in self._frozen:
            self.val_lpips.update(self._lpips(sr, hr))
            logs["val/lpips"] = self.val_lpips
        if batch_idx < self.hparams.log_images:
            up = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False)
            log_image_strip(self, f"val/sample_{batch_idx}", [up[0], sr[0], hr[0]])
        self.log_dict(logs, prog_bar=True, batch_size=1)

    def on_test_start(self) -> None:
        self._test_names = test_set_names(self.trainer)
        self._test_device = device_label(self.device)
        n = len(self._test_names)
        self._rows = [b.capitalize() for b in (self.hparams.baselines or [])] + [self.hparams.method]
        self.test_metrics = nn.ModuleList(
            nn.ModuleList(nn.ModuleList([PSNR(0, False), SSIM(0, False), torchmetrics.MeanMetric(),
                                         torchmetrics.MeanMetric()]) for _ in self._rows) for _ in range(n)
        ).to(self.device)
        self._timing = {i: [0.0, 0] for i in range(n)}
        self._settings = {}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        lr, hr, refs = batch["lr"], batch["hr"], batch.get("refs")
        n_refs = 0 if refs is None else refs.shape[1]
        self._settings.setdefault(dataloader_idx, (lr.shape[-1], self.scale, n_refs))
        outs = {}
        for b in self.hparams.baselines or []:
            if b != "bicubic":
                raise ValueError(f"unknown baseline {b!r} (bicubic)")
            outs["Bicubic"] = imresize(lr, (hr.shape[-2], hr.shape[-1]))  # MATLAB bicubic: the kernel of the data
        sr, seconds = timed_call(lambda x: self.net(x, refs), lr)
        self._timing[dataloader_idx][0] += seconds
        self._timing[dataloader_idx][1] += lr.shape[0]
        outs[self.hparams.method] = sr
        for row, (p, s, lp, ident) in zip(self._rows, self.test_metrics[dataloader_idx], strict=True):
            out = outs[row].clamp(0, 1)
            p.update(out, hr)
            s.update(out, hr)
            if "lpips" in self._frozen:
                lp.update(self._lpips(out, hr))
            if "embedder" in self._frozen:
                ident.update(self.identity_distance(out, hr))
        tag = self._test_names[dataloader_idx]
        if batch_idx < self.hparams.save_test_images and self.trainer.is_global_zero:
            self._save_strip(refs, outs, hr, f"{tag}_{batch_idx:03d}")
        p, s, _, _ = self.test_metrics[dataloader_idx][self._rows.index(self.hparams.method)]
        self.log_dict({f"test/{tag}/psnr": p, f"test/{tag}/ssim": s}, batch_size=1, add_dataloader_idx=False)

    def _save_strip(self, refs: Tensor | None, outs: dict[str, Tensor], hr: Tensor, name: str) -> None:
        """References, every row's output and the ground truth side by side (first image of the batch), labelled."""
        panels = [("ref", r) for r in (refs[0] if refs is not None else [])] + list(outs.items()) + [("HR", hr)]
        panels = [(label, img[0] if img.ndim == 4 else img) for label, img in panels]
        write_image(Path(self.trainer.default_root_dir) / "images" / f"{name}.png",
                    labelled_strip(panels, font_scale=0.35, thickness=1, origin=(3, 12)))

    def on_test_epoch_end(self) -> None:
        self._results = {}
        for i, tag in enumerate(self._test_names):
            for row, (p, s, lp, ident) in zip(self._rows, self.test_metrics[i], strict=True):
                self._results[(tag, row)] = {
                    "PSNR": p.compute().item(), "SSIM": s.compute().item(),
                    "LPIPS": lp.compute().item() if "lpips" in self._frozen else None,
                    "ID dist.": ident.compute().item() if "embedder" in self._frozen else None}

    def _embedder_desc(self) -> str:
        from shared.face.dlib_models import FaceChipEmbedder

        if isinstance(self.frozen("embedder"), FaceChipEmbedder):
            return ("dlib's 128-D ResNet embedder on dlib's 150×150 face chip, cut from both with the 5 points found "
                    "on the ground truth; for scale: Obama's five photos of face-recognition are 0.01–0.05 apart, "
                    "Biden 0.17–0.20 from them")
        return f"model.face_embedder = {type(self.frozen('embedder')).__name__}"

    def identity_distance(self, sr: Tensor, hr: Tensor) -> Tensor:
        """Per-image 1 − cos(e(SR), e(HR)) of uint8-rounded images with the configured face embedder."""
        q = lambda x: (x.clamp(0, 1) * 255).round() / 255  # noqa: E731
        emb = self.frozen("embedder")
        if hasattr(emb, "pair"):  # dlib's chips: both cut with the points found on the ground truth
            a, b = emb.pair(q(sr), q(hr))
        else:
            a, b = emb(q(sr)), emb(q(hr))
        return 1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)

    def gmacs(self, lr_size: int, n_refs: int = 3) -> float:
        """GMACs of one forward pass at an lr_size² input with ``n_refs`` references (Table 5.1 column)."""
        dev = next(self.net.parameters()).device
        s = self.scale
        lr = torch.zeros(1, 3, lr_size, lr_size, device=dev)
        refs = torch.zeros(1, n_refs, 3, lr_size * s, lr_size * s, device=dev)
        return count_macs(self.net, lr, refs) / 1e9

    def report_tables(self, results: list[dict]) -> list[Table]:
        """Table 5.1 layout: per test setting (LR, s) the bicubic baseline and the network — PSNR/SSIM on RGB,
        LPIPS (when a backbone is configured), parameters and GMACs."""
        params = sum(p.numel() for p in self.net.parameters()) / 1e6
        cols = ["test set", "(LR, s)", "Methods", "PSNR", "SSIM", "LPIPS", "Params (M)", "GMACs", "refs",
                "s/image"]
        if "embedder" in self._frozen:
            cols.insert(6, "ID dist.")
        rows = []
        for i, tag in enumerate(self._test_names):
            lr_size, scale, n_refs = self._settings.get(i, (None, self.scale, 0))
            gmacs = self.gmacs(lr_size, n_refs) if lr_size else None
            sec, count = self._timing.get(i, [0.0, 0])
            for row in self._rows:
                res = self._results.get((tag, row), {})
                ours = row == self.hparams.method
                rows.append({"test set": tag, "(LR, s)": f"({lr_size}, {scale})", "Methods": row, **res,
                             "Params (M)": round(params, 2) if ours else None,
                             "GMACs": round(gmacs, 3) if ours and gmacs is not None else None,
                             "refs": n_refs if ours else None, "s/image": sec / count if ours and count else None})
        notes = ["PSNR/SSIM on RGB (uint8-rounded outputs, no border crop); LPIPS "
                 + ("with the configured backbone" if "lpips" in self._frozen else "not computed (set "
                    "model.lpips_backbone)"),
                 *([f"ID dist. = mean 1 − cosine similarity of the face embeddings of output and ground truth "
                    f"({self._embedder_desc()})"] if "embedder" in self._frozen else []),
                 *([self._embedder_note] if self._embedder_note else []),
                 f"GMACs counted by forward hooks (conv/linear/deformable conv) at the test input size; s/image on "
                 f"{self._test_device}"]
        return [Table(f"{self.hparams.method} (Table 5.1 layout)", cols, rows, notes)]

    # ---------------------------------------------------------------------------------------------- inference
    def infer(self, input: Path, output: Path, refs: str | Iterable[str] | None = None,
              suffix: str | None = None, face_crop: str = "auto", mtcnn_dir: str | None = None,
              crop_scale: float = 2.0, max_memory_gb: float = 4.0, dry_run: bool = False) -> None:
        """Faces (an image or a folder) → ×s PNGs, guided by the reference photos ``refs`` (a folder, one file, a
        comma-separated string or a list; optional — none = no references).

        ``face_crop``: ``never`` uses the images as they are (headshots); ``always`` finds the largest face with
        MTCNN (weights from ``mtcnn_dir``; null = the asset copy of ``make assets``) in the input and in every
        reference and cuts a square of ``crop_scale`` × the face box around it (the headshot framing the network was
        trained on); ``auto`` does that when MTCNN weights are found, for inputs whose face is small in the
        picture, and always for references.
        ``infer_tile=auto`` keeps the process within ``max_memory_gb``; ``dry_run`` prints the plan per image (output
        size, tiles, estimated memory) and writes nothing."""
        if face_crop not in ("auto", "always", "never"):
            raise UserError(f"face_crop must be auto, always or never, got {face_crop!r}")
        suffix = suffix or self.hparams.infer_suffix
        files = list_files(input, IMAGE_EXTS)
        if not files:
            raise UserError(f"no images found in {input} (looked for {', '.join(sorted(IMAGE_EXTS))})")
        detector = None
        if face_crop != "never":
            from shared.face.mtcnn import load_mtcnn

            try:  # mtcnn_dir null: the copy `make assets` fetched (shared.face.mtcnn, the lookup of every project)
                detector = load_mtcnn(mtcnn_dir, "give infer_options.mtcnn_dir=<folder with pnet.pt, rnet.pt, "
                                                 "onet.pt> or face_crop=never").to(self.device)
            except UserError:
                if face_crop == "always":
                    raise
        ref_images = []
        for f in reference_files(refs):
            img = read_image(f)
            if detector is not None:
                img = headshot_crop(img, detector, crop_scale)
                if img is None:
                    log.warning("no face found in reference %s — skipped", f)
                    continue
            ref_images.append(img)
        s = self.scale
        dests = dict(zip(files, destinations(files, input, output, suffix, IMAGE_EXTS)))
        use_channels_last(self.net, self.hparams.infer_channels_last)
        runner = self.runner(len(ref_images), max_memory_gb)

        def one(f: Path) -> None:
            img = read_image(f)
            if detector is not None:
                crop = headshot_crop(img, detector, crop_scale, only_if_small=face_crop == "auto")
                if crop is None and face_crop == "always":
                    raise UserError(f"no face found in {f}")
                img = img if crop is None else crop
            lr = image_to_tensor(img)[None].to(self.device)
            h, w = lr.shape[-2:]
            ref_t = torch.zeros(1, 0, 3, h * s, w * s, device=self.device)
            if ref_images:
                ref_t = torch.stack([image_to_tensor(fit_image(r, h * s, w * s)) for r in ref_images])[None]
            packed, _ = self._packed(lr, ref_t.to(self.device))
            with precision_context(self.device, self.hparams.infer_precision):
                runner.to_image(packed, dests[f], f"{f} → {dests[f]}: {w * s}×{h * s}, {len(ref_images)} reference(s)",
                                dry_run)

        raise_failures(each_input(files, one, progress="super-resolving", unit="img"), len(files))


def headshot_crop(img: np.ndarray, detector, crop_scale: float = 2.0,
                  only_if_small: bool = False) -> np.ndarray | None:
    """A square headshot around the largest MTCNN face: side = ``crop_scale`` × the longer side of the face box,
    centred on the mean of the 5 facial points, zero-padded where it leaves the picture. None if no face is found,
    or (``only_if_small``) if the face already fills the picture (side ≥ the picture's shorter side)."""
    faces = detector(img)
    if not len(faces):
        return None
    i = faces.largest()
    x1, y1, x2, y2 = faces.boxes[i]
    side = int(round(crop_scale * max(x2 - x1, y2 - y1)))
    if only_if_small and side >= min(img.shape[:2]):
        return None
    cx, cy = faces.points[i].mean(0)
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    out = np.zeros((side, side, img.shape[2]), img.dtype)
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(top + side, img.shape[0]), min(left + side, img.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = img[sy0:sy1, sx0:sx1]
    return out


def reference_files(refs: str | Iterable[str] | None) -> list[Path]:
    """The reference photos named by ``refs``: None → none; a folder → its images; files (a list or a
    comma-separated string). A missing path is a :class:`UserError`."""
    if refs is None or refs == "":
        return []
    items = [r.strip() for r in refs.split(",") if r.strip()] if isinstance(refs, str) else [str(r) for r in refs]
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise UserError(f"reference path not found: {path}")
        found = list_files(path, IMAGE_EXTS)
        if path.is_dir() and not found:
            raise UserError(f"no reference images in {path}")
        out += found
    return out

