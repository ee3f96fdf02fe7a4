"""Face-set recognition networks (chapter 2): the SphereFace-20 backbone (sphere20a), margin heads (A-Softmax with
the λ annealing schedule, CosFace, ArcFace), timm backbones, and the multi-column set aggregation of Fig. 2.5 /
Eq. 2.1 with its mean-pooling ablation baseline.

``FaceSetNet`` bundles backbone + aggregator: ``embed(images)`` gives the 512-d per-face features V_i, and
``aggregate(features, mask)`` the set descriptor V_d. The classification heads live in the LightningModule (they
depend on the number of training identities and are not part of the deployed network).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.errors import UserError

# ----------------------------------------------------------------------------------------------- backbones


class _Residual(nn.Module):
    """x + PReLU(conv(PReLU(conv(x)))) — the sphere20a residual unit (no BatchNorm)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(ch, ch, 3, 1, 1), nn.PReLU(ch)
        self.conv2, self.relu2 = nn.Conv2d(ch, ch, 3, 1, 1), nn.PReLU(ch)
        for conv in (self.conv1, self.conv2):  # Caffe recipe: gaussian(0.01) for residual convs, zero bias
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.relu2(self.conv2(self.relu1(self.conv1(x))))


class SphereNet(nn.Module):
    """SphereFace-20 ("sphere20a", Sec. 2.2.2): 4 stages, each a stride-2 3×3 conv + PReLU followed by
    ``units`` residual units of two 3×3 convs; 20 convs for units (1, 2, 4, 1); flatten → ``fc5`` (512-d).
    Input B×3×112×96 (H×W), output B×``embedding_dim``."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512), units: Sequence[int] = (1, 2, 4, 1),
                 embedding_dim: int = 512, input_size: Sequence[int] = (112, 96)) -> None:
        super().__init__()
        if len(widths) != len(units):
            raise ValueError("widths and units need one entry per stage")
        layers: list[nn.Module] = []
        cin = 3
        for w, n in zip(widths, units):
            conv = nn.Conv2d(cin, w, 3, 2, 1)
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.PReLU(w), *[_Residual(w) for _ in range(n)]]
            cin = w
        self.features = nn.Sequential(*layers)
        h, w = int(input_size[0]), int(input_size[1])
        for _ in widths:
            h, w = (h + 1) // 2, (w + 1) // 2
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.fc5 = nn.Linear(cin * h * w, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            raise UserError(f"SphereNet expects {self.input_size[0]}×{self.input_size[1]} faces, got "
                            f"{tuple(x.shape[-2:])}")
        return self.fc5(self.features(x).flatten(1))


def sphere20a(embedding_dim: int = 512) -> SphereNet:
    """The paper's backbone: widths 64/128/256/512, residual units 1/2/4/1 (20 conv layers)."""
    return SphereNet((64, 128, 256, 512), (1, 2, 4, 1), embedding_dim)


class TimmBackbone(nn.Module):
    """Any timm image model (random init, no download) + a linear projection to ``embedding_dim``."""

    def __init__(self, name: str = "resnet18", embedding_dim: int = 512, input_size: Sequence[int] = (112, 96),
                 weights_path: str | None = None) -> None:
        super().__init__()
        import timm

        try:
            self.body = timm.create_model(name, pretrained=False, num_classes=0)
        except RuntimeError as exc:
            raise UserError(f"unknown timm model {name!r}: {exc}") from exc
        if weights_path:
            from shared.checkpoint import extract_state_dict
            from shared.io import load_checkpoint_file

            sd = extract_state_dict(load_checkpoint_file(weights_path))
            missing, unexpected = self.body.load_state_dict(sd, strict=False)
            if len(missing) == len(self.body.state_dict()):
                raise UserError(f"{weights_path} holds no weights of timm model {name}")
        self.fc5 = nn.Linear(self.body.num_features, embedding_dim)
        self.embedding_dim = embedding_dim
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc5(self.body(x))


class DlibResNet(nn.Module):
    """dlib's pretrained face embedder (``dlib_face_recognition_resnet_model_v1``: a 29-layer ResNet trained by dlib's
    author on ~3M faces, 99.38 % on LFW by his report; ``shared.face.dlib_models``) as a frozen backbone: B×3×150×150
    aligned chips in [0, 1] (``data.template=dlib``: dlib's 5-point chips with ``detector=dlib``, or the project's
    MTCNN alignment onto the ``dlib`` template) → B×128 descriptors. It has no trainable parameters (the aggregation
    stage trains the multi-column network on its features); the features of a chip are kept in memory by the chip's
    bytes (``cache_size`` chips), so sets that repeat faces over the epochs are embedded once. ``num_jitters``: dlib's
    test-time augmentation (0 = none)."""

    frozen = True
    template = "dlib"

    def __init__(self, embedding_dim: int = 128, input_size: Sequence[int] = (150, 150), num_jitters: int = 0,
                 cache_size: int = 100_000) -> None:
        super().__init__()
        from shared.face import dlib_models

        if embedding_dim != 128 or tuple(input_size) != (dlib_models.CHIP_SIZE, dlib_models.CHIP_SIZE):
            raise UserError("dlib_resnet gives 128-d features of 150×150 chips (model.net.backbone.embedding_dim=128, "
                            "input_size=[150, 150])")
        dlib_models.import_dlib()
        dlib_models.model_file("embedder")  # missing → one error line at construction
        self.embedding_dim, self.input_size = 128, (150, 150)
        self.num_jitters, self.cache_size = int(num_jitters), int(cache_size)
        self._cache: dict[bytes, Tensor] = {}
        self.calls = 0  # chips the network actually ran on

    def forward(self, x: Tensor) -> Tensor:
        import hashlib

        from shared.face import dlib_models

        if tuple(x.shape[-2:]) != self.input_size:
            raise UserError(f"dlib_resnet expects 150×150 chips, got {tuple(x.shape[-2:])} (data.template=dlib)")
        chips = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        chips = chips.cpu().numpy()
        keys = [hashlib.sha1(c.tobytes()).digest() for c in chips]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            feats = torch.from_numpy(dlib_models.embed([chips[i] for i in todo], self.num_jitters)).float()
            self.calls += len(todo)
            if len(self._cache) + len(todo) > self.cache_size:
                self._cache.clear()
            for i, f in zip(todo, feats):
                self._cache[keys[i]] = f
        return torch.stack([self._cache[k] for k in keys]).to(x.device, x.dtype)


# ----------------------------------------------------------------------------------------------- margin heads


def chebyshev_cos(c: Tensor, m: int) -> Tensor:
    """cos(mθ) from c = cos θ via the Chebyshev recurrence T_{n+1} = 2c·T_n − T_{n−1} (m = 4: 8c⁴ − 8c² + 1)."""
    t_prev, t = torch.ones_like(c), c
    if m == 0:
        return t_prev
    for _ in range(m - 1):
        t_prev, t = t, 2 * c * t - t_prev
    return t


def psi(cos_theta: Tensor, m: int) -> Tensor:
    """A-Softmax target function ψ(θ) = (−1)^k cos(mθ) − 2k, k = ⌊mθ/π⌋: monotone decreasing on [0, π]."""
    c = cos_theta.clamp(-1, 1)
    theta = torch.acos(c.detach())
    k = torch.floor(m * theta / math.pi).clamp(max=m - 1) if m > 0 else torch.zeros_like(c)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * chebyshev_cos(c, m) - 2 * k


def asoftmax_lambda(step: int | Tensor, base: float = 1500.0, gamma: float = 0.1, power: float = 1.0,
                    lambda_min: float = 5.0) -> float:
    """λ annealing of A-Softmax: λ = max(λ_min, base·(1 + γ·it)^−power) with it = step + 1 (it = 1 → 1363.6)."""
    it = float(step) + 1.0
    return max(lambda_min, base * (1.0 + gamma * it) ** (-power))


class MarginHead(nn.Module):
    """Class weights W (C×D) for margin softmax losses; ``forward(x, labels, step)`` → logits for cross-entropy
    (margin applied on the target class when ``labels`` is given, plain logits otherwise).

    kind ``asoftmax`` (SphereFace, m = 4): weights normalised, features not; logits ‖x‖cos θ, target
    (λ‖x‖cos θ + ‖x‖ψ(θ))/(1 + λ) with λ annealed by the global step. ``cosface``: s(cos θ − m).
    ``arcface``: s·cos(θ + m) (with the usual fallback cos θ − m·sin m once θ + m > π). ``softmax``: ‖x‖cos θ.

    ``normalize`` (asoftmax / softmax): ‖x‖ is replaced by the scale ``s`` — the feature is L2-normalised and
    scaled (NormFace). The aggregation stage needs it: its descriptor is a weighted mean of unit features, ‖x‖ ≤ 1,
    so without a scale every logit lies in [−1, 1] and with thousands of identities the loss cannot fall much
    below ln(C) (tests/projects/faceset/test_aggregation.py)."""

    def __init__(self, in_features: int, num_classes: int, kind: str = "asoftmax", m: float = 4, s: float = 64.0,
                 lambda_base: float = 1500.0, lambda_gamma: float = 0.1, lambda_power: float = 1.0,
                 lambda_min: float = 5.0, normalize: bool = False) -> None:
        super().__init__()
        if kind not in ("asoftmax", "cosface", "arcface", "softmax"):
            raise UserError(f"unknown margin head {kind!r} (asoftmax | cosface | arcface | softmax)")
        if kind == "asoftmax" and (int(m) != m or m < 1):
            raise UserError(f"A-Softmax needs an integer margin m ≥ 1, got {m}")
        self.kind, self.m, self.s, self.normalize = kind, m, s, normalize
        self.lambda_args = dict(base=lambda_base, gamma=lambda_gamma, power=lambda_power, lambda_min=lambda_min)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, x: Tensor) -> Tensor:
        return (F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T).clamp(-1, 1)

    def forward(self, x: Tensor, labels: Tensor | None = None, step: int = 0) -> Tensor:
        cos = self.cosine(x)
        if self.kind in ("asoftmax", "softmax"):
            norm = torch.full_like(x[:, :1], float(self.s)) if self.normalize else x.norm(dim=1, keepdim=True)
            logits = norm * cos
            if labels is None or self.kind == "softmax":
                return logits
            lam = asoftmax_lambda(step, **self.lambda_args)
            target = cos.gather(1, labels[:, None])
            new = norm * (lam * target + psi(target, int(self.m))) / (1 + lam)
            return logits.scatter(1, labels[:, None], new)
        if labels is None:
            return self.s * cos
        target = cos.gather(1, labels[:, None])
        if self.kind == "cosface":
            new = target - self.m
        else:
            theta = torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7))
            new = torch.where(theta + self.m <= math.pi, torch.cos(theta + self.m),
                              target - self.m * math.sin(self.m))
        return self.s * cos.scatter(1, labels[:, None], new)


# ----------------------------------------------------------------------------------------------- aggregation


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _check_mask(feats: Tensor, mask: Tensor | None) -> Tensor:
    if feats.ndim != 3:
        raise UserError(f"a batch of face sets must be B×N×D, got shape {tuple(feats.shape)}")
    if mask is None:
        mask = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
    if feats.shape[1] == 0 or not bool(mask.any(1).all()):
        raise UserError("empty face set: every set needs at least one face")
    return mask.bool()


class MultiColumn(nn.Module):
    """Multi-column aggregation (Fig. 2.5, Eq. 2.1): quality α_i = σ(column_q(V_i)), content
    β_i = σ(column_c([V_i, V̄_α])) with V̄_α the α-weighted set mean (or σ(column_c(V_i)) when
    ``content_context=False``); V_d = Σ α_i β_i V_i / Σ α_i β_i over the valid (unmasked) faces.

    Extra parameters for D = 512 (the dissertation's "≈6k"): ``hidden=(4,)`` with context → quality 512→4→1
    (2,057) + content 1024→4→1 (4,105) = **6,162** (the default); ``hidden=()`` (one FC per column) → 513 + 1,025
    = 1,538."""

    def __init__(self, dim: int = 512, hidden: Sequence[int] = (4,), content_context: bool = True,
                 normalize: bool = True) -> None:
        super().__init__()
        self.quality = _mlp([dim, *hidden, 1])
        self.content = _mlp([dim * (2 if content_context else 1), *hidden, 1])
        self.content_context, self.normalize = content_context, normalize

    def weights(self, feats: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(α, β, V) for B×N×D features; α, β are B×N, zero at masked positions."""
        mask = _check_mask(feats, mask)
        v = F.normalize(feats, dim=-1) if self.normalize else feats
        m = mask.to(v.dtype)
        alpha = torch.sigmoid(self.quality(v)).squeeze(-1) * m
        if self.content_context:
            ctx = (alpha[..., None] * v).sum(1) / alpha.sum(1, keepdim=True).clamp_min(1e-12)
            beta = torch.sigmoid(self.content(torch.cat([v, ctx[:, None].expand_as(v)], -1))).squeeze(-1)
        else:
            beta = torch.sigmoid(self.content(v)).squeeze(-1)
        return alpha, beta * m, v

    def forward(self, feats: Tensor, mask: Tensor | None = None) -> Tensor:
        alpha, beta, v = self.weights(feats, mask)
        w = alpha * beta
        return (w[..., None] * v).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-12)


class MeanPool(nn.Module):
    """Ablation baseline: the (masked) mean of the (L2-normalised) face features."""

    def __init__(self, dim: int = 512, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, feats: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = _check_mask(feats, mask)
        v = F.normalize(feats, dim=-1) if self.normalize else feats
        m = mask.to(v.dtype)[..., None]
        return (v * m).sum(1) / m.sum(1)


INPUT_NORMS = ("unit", "sphereface")


class FaceSetNet(nn.Module):
    """Backbone (per-face features V_i) + aggregator (set descriptor V_d) — the network of Fig. 2.1. Faces come in
    as RGB in [0, 1] (Sec. 2.2.1); ``input_norm="sphereface"`` feeds the backbone SphereFace's (x − 127.5)/128 of
    the 8-bit values instead (for weights trained that way)."""

    def __init__(self, backbone: nn.Module, aggregator: nn.Module | None = None, input_norm: str = "unit") -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise UserError(f"unknown input_norm {input_norm!r} ({' | '.join(INPUT_NORMS)})")
        self.backbone = backbone
        self.aggregator = aggregator if aggregator is not None else MeanPool()
        self.input_norm = input_norm

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(getattr(self.backbone, "input_size", (112, 96)))

    def embed(self, images: Tensor) -> Tensor:
        """B×3×H×W faces (RGB in [0, 1]) → B×D features."""
        if self.input_norm == "sphereface":
            images = (images * 255.0 - 127.5) / 128.0
        return self.backbone(images)

    def aggregate(self, feats: Tensor, mask: Tensor | None = None) -> Tensor:
        """B×N×D features (+ B×N validity mask) → B×D set descriptors (Eq. 2.1)."""
        return self.aggregator(feats, mask)

    def forward(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        """B×N×3×H×W face sets → B×D set descriptors; B×3×H×W single faces → B×D features."""
        if images.ndim == 4:
            return self.embed(images)
        b, n = images.shape[:2]
        if n == 0:
            raise UserError("empty face set: every set needs at least one face")
        return self.aggregate(self.embed(images.flatten(0, 1)).view(b, n, -1), mask)
