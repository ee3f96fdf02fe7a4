"""The landmark detector (Section 3.4.1): a VGG-style CNN regressing the 68 points from a face crop — the first level
of Mao et al.'s cascaded network the chapter adopts — with a heat-map head (soft-argmax, integral regression)
selectable instead of the fully connected one; and the losses of Table 3.1.

Coordinates are normalised crop coordinates: pixel coordinate / (size − 1), so (0, 0) and (1, 1) are the centres of
the top-left and bottom-right pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.errors import UserError


def _stage(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VGGLandmarkNet(nn.Module):
    """VGG-style landmark regressor. ``head='regression'``: stages of 3×3 convs + 2×2 max-pool, then FC → 2N
    offsets from the crop centre; ``head='heatmap'``: N heat-maps from the features after stage ``heatmap_stage``
    (stride 2^(stage+1)), decoded by a soft-argmax with a learned temperature. Output: B×N×2 in [0, 1]."""

    def __init__(self, in_size: int = 112, channels: tuple[int, ...] = (64, 128, 256, 512), convs_per_stage: int = 2,
                 fc: int = 1024, n_points: int = 68, head: str = "regression", heatmap_stage: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if head not in ("regression", "heatmap"):
            raise UserError(f"unknown head {head!r} (regression | heatmap)")
        channels = tuple(channels)
        if in_size % (2 ** len(channels)):
            raise UserError(f"in_size={in_size} must be divisible by 2^{len(channels)} (one pooling per stage)")
        self.in_size, self.n_points, self.head = in_size, n_points, head
        self.stages = nn.ModuleList(_stage(a, b, convs_per_stage) for a, b in zip((3, *channels[:-1]), channels))
        if head == "regression":
            feat = in_size // 2 ** len(channels)
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * feat * feat, fc), nn.ReLU(inplace=True),
                                    nn.Dropout(dropout), nn.Linear(fc, 2 * n_points))
            nn.init.zeros_(self.fc[-1].weight)
            nn.init.zeros_(self.fc[-1].bias)
        else:
            if not 0 <= heatmap_stage < len(channels):
                raise UserError(f"heatmap_stage must be in [0, {len(channels) - 1}]")
            self.heatmap_stage = heatmap_stage
            c = channels[heatmap_stage]
            self.hm = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, n_points, 1))
            self.log_beta = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.in_size, self.in_size):
            raise UserError(f"expected {self.in_size}×{self.in_size} crops, got {tuple(x.shape[-2:])}")
        x = (x - 0.5) / 0.25
        for i, stage in enumerate(self.stages):
            x = F.max_pool2d(stage(x), 2)
            if self.head == "heatmap" and i == self.heatmap_stage:
                return self.soft_argmax(self.hm(x))
        return 0.5 + self.fc(x).view(-1, self.n_points, 2)

    def soft_argmax(self, maps: Tensor) -> Tensor:
        """Expected position under softmax(β · map): heat-map cell j covers crop pixels of centre
        (j + 0.5)·stride − 0.5."""
        b, n, h, w = maps.shape
        stride = self.in_size / w
        p = (maps.flatten(2) * self.log_beta.exp() * 4).softmax(-1).view(b, n, h, w)
        xs = ((torch.arange(w, device=maps.device, dtype=maps.dtype) + 0.5) * stride - 0.5) / (self.in_size - 1)
        ys = ((torch.arange(h, device=maps.device, dtype=maps.dtype) + 0.5) * stride - 0.5) / (self.in_size - 1)
        return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)


LOSSES = ("l2", "modified_l2", "l1", "smooth_l1", "wing", "l0")
# Table 3.1: the loss whose minimiser recovers the true landmark under each annotation-noise type
TABLE_3_1 = {"gaussian": "l2", "poisson": "l2", "bernoulli": "modified_l2", "salt_pepper": "l1", "impulse": "l0"}


class LandmarkLoss(nn.Module):
    """Table 3.1 losses on B×N×2 coordinates (d = prediction − target, per coordinate):

    * ``l2`` — Eq. 3.7: mean over points of ‖d‖² (= 2 × the mean of d² over coordinates); the conditional mean,
      right for zero-mean noise (additive Gaussian, Poisson);
    * ``modified_l2`` — Bernoulli (binomial) noise, [70]: the L2 of the coordinates the mask ``valid`` keeps,
      2 Σ m·d² / Σ m (dropped annotations carry no gradient; equal to ``l2`` when nothing is dropped);
    * ``l1`` — mean |d|: the conditional median, right for salt-and-pepper noise;
    * ``l0`` — random-valued impulse noise: mean (|d| + ε)^γ, the annealed L0 surrogate of Noise2Noise [71] (the
      mode); with ``gamma_start`` and ``anneal_steps`` γ goes linearly from ``gamma_start`` to ``gamma``;
    * ``smooth_l1`` and ``wing`` (Feng et al. [72]) — robust alternatives, not in Table 3.1.

    ``width`` / ``curvature``: the wing and smooth-L1 breakpoints in normalised crop units."""

    def __init__(self, kind: str = "l2", width: float = 0.05, curvature: float = 0.01, gamma: float = 0.5,
                 eps: float = 1e-3, gamma_start: float | None = None, anneal_steps: int = 0) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise UserError(f"unknown loss {kind!r} ({' | '.join(LOSSES)})")
        self.kind, self.width, self.curvature, self.gamma, self.eps = kind, width, curvature, gamma, eps
        self.gamma_start, self.anneal_steps = gamma_start, anneal_steps

    def l0_gamma(self, step: int = 0) -> float:
        """γ of the L0 surrogate at a training step (linear annealing, then constant)."""
        if self.gamma_start is None or self.anneal_steps <= 0:
            return self.gamma
        t = min(max(step, 0) / self.anneal_steps, 1.0)
        return self.gamma_start + (self.gamma - self.gamma_start) * t

    def forward(self, pred: Tensor, target: Tensor, valid: Tensor | None = None, step: int = 0) -> Tensor:
        d = pred - target
        if self.kind == "l2":
            return d.pow(2).sum(-1).mean()
        if self.kind == "modified_l2":
            if valid is None:
                return d.pow(2).sum(-1).mean()
            m = valid.to(d.dtype).expand_as(d)
            return 2 * (m * d.pow(2)).sum() / m.sum().clamp_min(1.0)
        if self.kind == "l1":
            return d.abs().mean()
        if self.kind == "smooth_l1":
            return F.smooth_l1_loss(pred, target, beta=self.curvature)
        if self.kind == "wing":
            w, e = self.width, self.curvature
            a = d.abs()
            c = w - w * torch.log1p(torch.tensor(w / e, dtype=d.dtype, device=d.device))
            return torch.where(a < w, w * torch.log1p(a / e), a - c).mean()
        return (d.abs() + self.eps).pow(self.l0_gamma(step)).mean()


COMPONENT_GROUPS: dict[str, tuple[int, int]] = {
    "contour": (0, 17), "brows": (17, 27), "nose": (27, 36), "eyes": (36, 48), "mouth": (48, 68)}


class ComponentRefiner(nn.Module):
    """Second-level network for one facial component: a patch of the face crop around the first-level estimate of the
    component's points (square, ``margin`` on each side) → small VGG features, fused with the global first-level
    shape expressed in patch coordinates → offsets of the component's points (zero-initialised)."""

    def __init__(self, n_points: int, patch: int = 32, channels: tuple[int, ...] = (16, 32, 64), fc: int = 128,
                 n_total: int = 68, margin: float = 0.3) -> None:
        super().__init__()
        self.patch, self.margin = patch, margin
        self.features = nn.Sequential(*[nn.Sequential(_stage(a, b, 1), nn.MaxPool2d(2))
                                        for a, b in zip((3, *channels[:-1]), channels)])
        feat = patch // 2 ** len(channels)
        self.fuse = nn.Sequential(nn.Linear(channels[-1] * feat * feat + 2 * n_total, fc), nn.ReLU(inplace=True),
                                  nn.Linear(fc, 2 * n_points))
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    def forward(self, x: Tensor, shape: Tensor, idx: slice) -> Tensor:
        """x: B×3×S×S crops, shape: B×68×2 first-level points (crop pixels) → refined B×n×2 (crop pixels)."""
        s = x.shape[-1]
        comp = shape[:, idx].detach()
        lo, hi = comp.min(1).values, comp.max(1).values
        centre = (lo + hi) / 2
        side = ((hi - lo).max(1).values * (1 + 2 * self.margin)).clamp(min=4.0)
        step = side / (self.patch - 1)  # crop pixels per patch pixel
        g = torch.arange(self.patch, device=x.device, dtype=x.dtype) - (self.patch - 1) / 2
        gx = centre[:, 0, None] + g[None] * step[:, None]  # B×P crop x of patch columns
        gy = centre[:, 1, None] + g[None] * step[:, None]
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1) / (s - 1) * 2 - 1
        patch = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        to_patch = lambda p: (p - centre[:, None]) / (step[:, None, None] * (self.patch - 1))  # noqa: E731
        glob = to_patch(shape.detach()).flatten(1)
        delta = self.fuse(torch.cat([self.features((patch - 0.5) / 0.25).flatten(1), glob], 1))
        return comp + delta.view(comp.shape) * step[:, None, None] * (self.patch - 1)


class CascadeNet(nn.Module):
    """Two-level cascade (Mao et al., Section 3.4.1, Fig. 3.6): the first-level VGG network (same arguments as
    :class:`VGGLandmarkNet`) predicts all 68 points,
    then one :class:`ComponentRefiner` per component (contour, brows, nose, eyes, mouth) refines its points from a
    patch around the first-level estimate. ``forward`` returns the refined points (normalised crop coordinates);
    ``levels`` returns both levels (the module trains both)."""

    def __init__(self, in_size: int = 112, channels: tuple[int, ...] = (64, 128, 256, 512), convs_per_stage: int = 2,
                 fc: int = 1024, n_points: int = 68, head: str = "regression", heatmap_stage: int = 1,
                 dropout: float = 0.2, patch: int = 32, refine_channels: tuple[int, ...] = (16, 32, 64),
                 refine_fc: int = 128, refine_margin: float = 0.3,
                 components: tuple[str, ...] = tuple(COMPONENT_GROUPS)) -> None:
        super().__init__()
        unknown = set(components) - set(COMPONENT_GROUPS)
        if unknown or n_points != 68:
            raise UserError(f"cascade components must be among {list(COMPONENT_GROUPS)} on 68 points: {unknown}")
        if patch % (2 ** len(refine_channels)):
            raise UserError(f"patch={patch} must be divisible by 2^{len(refine_channels)}")
        self.first = VGGLandmarkNet(in_size, channels, convs_per_stage, fc, n_points, head, heatmap_stage, dropout)
        self.in_size, self.n_points = in_size, 68
        self.components = list(components)
        self.refiners = nn.ModuleDict({c: ComponentRefiner(COMPONENT_GROUPS[c][1] - COMPONENT_GROUPS[c][0], patch,
                                                           tuple(refine_channels), refine_fc, 68, refine_margin)
                                       for c in components})

    def levels(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p1 = self.first(x)
        k = self.in_size - 1
        shape = p1 * k
        out = shape.clone()
        for c in self.components:
            a, b = COMPONENT_GROUPS[c]
            out[:, a:b] = self.refiners[c](x, shape, slice(a, b))
        return p1, out / k

    def forward(self, x: Tensor) -> Tensor:
        return self.levels(x)[1]


class DlibLandmarkNet(nn.Module):
    """dlib's 68-point predictor (trained on iBUG 300-W by dlib's author; ``shared.face.dlib_models``) as a drop-in
    ``model.net``: the reference per-frame detector of the landmark tables (``model=dlib``; evaluate with
    ``allow_untrained=true``). Same interface as :class:`VGGLandmarkNet` — B×3×S×S crops in [0, 1] → B×68×2
    normalised crop coordinates — so it sees exactly the crops the trained networks see, under every protocol.

    In each crop dlib's HOG detector looks for the face (``detect``; ``upsample`` doublings); the detection
    overlapping the expected face box most (IoU ≥ 0.3) is used, else the expected box itself — the crop is the
    landmark (or detection) box grown by ``margin`` on each side, so the face box sits at its centre
    (:func:`shared.face.dlib_models.box_from_landmarks` convention). The predictor's points are read at 1/``subpixel``
    pixel. No parameters: it cannot be trained (the module refuses)."""

    def __init__(self, in_size: int = 160, margin: float = 0.25, detect: bool = True, upsample: int = 0,
                 subpixel: int = 4, n_points: int = 68) -> None:
        super().__init__()
        if n_points != 68:
            raise UserError("dlib's predictor gives the 68 iBUG points (model.net.n_points must be 68)")
        from shared.face import dlib_models

        dlib_models.import_dlib()
        dlib_models.model_file("landmarks68")  # missing → one error line now, not at the first crop
        self.in_size, self.n_points, self.margin = int(in_size), 68, float(margin)
        self.detect, self.upsample, self.subpixel = bool(detect), int(upsample), int(subpixel)

    def expected_box(self):
        """The dlib face box expected in a crop made from a landmark box with ``margin``."""
        import numpy as np

        from shared.face.dlib_models import BOX_FROM_LANDMARKS

        s = self.in_size
        side = s / (1 + 2 * self.margin)
        dx, dy, k = BOX_FROM_LANDMARKS
        c = np.array([(s - 1) / 2 + dx * side, (s - 1) / 2 + dy * side])
        return np.concatenate([c - k * side / 2, c + k * side / 2])

    def forward(self, x: Tensor) -> Tensor:
        import numpy as np

        from shared.face import dlib_models as D

        if x.shape[-2:] != (self.in_size, self.in_size):
            raise UserError(f"expected {self.in_size}×{self.in_size} crops, got {tuple(x.shape[-2:])}")
        crops = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        ref = self.expected_box()
        out = []
        for crop in crops:
            box = ref
            if self.detect:
                boxes, _ = D.detect(crop, self.upsample, threshold=-0.5)
                if len(boxes):
                    iou = D.box_iou(boxes, ref)
                    if iou.max() >= 0.3:
                        box = boxes[int(iou.argmax())]
            out.append(D.landmarks68(crop, box, self.subpixel) / (self.in_size - 1))
        return torch.from_numpy(np.stack(out)).to(x.device, x.dtype)
