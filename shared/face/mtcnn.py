"""MTCNN face detection with 5 facial points (Zhang et al. 2016), the detector chapters 2, 3 and 5 align faces with.

Three cascaded networks — P-Net (fully convolutional proposals on an image pyramid), R-Net (24×24 refinement) and
O-Net (48×48 boxes + 5 points) — with the layer names and layouts of the widely distributed converted Caffe
weights (``pnet.pt``/``rnet.pt``/``onet.pt``, e.g. inside the facenet-pytorch wheel: ``python -m shared.assets``
fetches them), loaded with ``weights_only=True`` from a directory the user configures.

Everything after the networks is batched tensor code: proposals from the score maps, ``torchvision.ops.nms``,
bounding-box regression, squaring, and the 24/48-pixel crops of all candidates at once with ``roi_align``
(zero outside the image, area-like averaging inside). Points are returned in the order left eye, right eye, nose,
left mouth corner, right mouth corner (image left/right) — the order of the alignment templates in
:mod:`shared.face.align`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms, roi_align

from shared.errors import UserError, one_line
from shared.io import load_checkpoint_file


def _flatten_caffe(x: Tensor) -> Tensor:
    """Flatten in the (W, H, C) order the converted Caffe dense layers expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: 12×12 receptive field, stride 2; outputs face probability and box offsets per cell."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement network on 24×24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_caffe(self.prelu3(self.conv3(x)))))
        return self.dense5_1(x).softmax(1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output network on 48×48 crops: probability, box offsets and 5 points (x1..x5, y1..y5, box-relative)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_caffe(self.prelu4(self.conv4(x)))))
        return self.dense6_1(x).softmax(1)[:, 1], self.dense6_2(x), self.dense6_3(x)


@dataclass
class Faces:
    """Detections in one image: ``boxes`` N×4 (x1, y1, x2, y2, pixels), ``scores`` N, ``points`` N×5×2 (x, y)."""

    boxes: np.ndarray
    scores: np.ndarray
    points: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def largest(self) -> int:
        """Index of the largest face (what a headshot pipeline keeps)."""
        area = (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])
        return int(np.argmax(area))


def _regress(boxes: Tensor, reg: Tensor) -> Tensor:
    """Apply the networks' box regression (offsets relative to the box size)."""
    wh = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
    return boxes + reg * wh


def _square(boxes: Tensor) -> Tensor:
    """Grow each box to a square around its centre (side = the longer side)."""
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(1).values
    centre = boxes[:, 0:2] + wh / 2
    return torch.cat([centre - side[:, None] / 2, centre + side[:, None] / 2], 1)


def _nms_min(boxes: Tensor, scores: Tensor, thr: float) -> Tensor:
    """Greedy NMS with intersection over the smaller box (the last MTCNN stage)."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    overlap = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-9)
    keep = torch.ones(len(boxes), dtype=torch.bool)
    for i in range(len(boxes)):
        if keep[i]:
            suppress = overlap[i] > thr
            suppress[: i + 1] = False
            keep &= ~suppress
    return order[keep]


class MTCNN(nn.Module):
    """The detector: ``MTCNN.from_dir(path)(image) -> Faces`` for an H×W×3 uint8 RGB image."""

    def __init__(self, min_size: float = 20.0, factor: float = 0.709,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.min_size, self.factor, self.thresholds = min_size, factor, tuple(thresholds)

    @classmethod
    def from_dir(cls, weights_dir: str | Path, **kwargs) -> MTCNN:
        """Load ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (state dicts) from ``weights_dir``."""
        d = Path(weights_dir)
        net = cls(**kwargs)
        for name in ("pnet", "rnet", "onet"):
            f = d / f"{name}.pt"
            if not f.is_file():
                raise UserError(f"MTCNN weights not found: {f} (run `python -m shared.assets` for the facenet-pytorch "
                                "weights, or point the config at a directory holding pnet.pt, rnet.pt, onet.pt)")
            state = load_checkpoint_file(f)
            try:
                getattr(net, name).load_state_dict(state)
            except RuntimeError as exc:
                raise UserError(f"{f} is not an MTCNN {name} state dict: {one_line(exc)[:200]}") from exc
        return net.eval()

    @staticmethod
    def _normalise(x: Tensor) -> Tensor:
        return (x - 127.5) * 0.0078125

    def _scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.min_size
        side, scales = min(h, w) * m, []
        while side >= 12:
            scales.append(m * self.factor ** len(scales))
            side *= self.factor
        return scales

    def _crops(self, img: Tensor, boxes: Tensor, size: int) -> Tensor:
        """All boxes cropped and resampled to size×size at once (zero outside the image)."""
        rois = torch.cat([torch.zeros(len(boxes), 1, dtype=boxes.dtype, device=boxes.device), boxes], 1)
        return roi_align(img, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)

    @torch.inference_mode()
    def forward(self, image: np.ndarray | Tensor) -> Faces:
        img = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise UserError(f"MTCNN expects an H×W×3 RGB image, got shape {tuple(img.shape)}")
        dev = next(self.parameters()).device
        img = self._normalise(img.to(dev, torch.float32).permute(2, 0, 1)[None])
        h, w = img.shape[-2:]
        empty = Faces(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))

        # stage 1: P-Net over the pyramid → proposals (per-scale NMS 0.5, then 0.7 over all scales)
        props = []
        for s in self._scales(h, w):
            hs, ws = int(np.ceil(h * s)), int(np.ceil(w * s))
            prob, reg = self.pnet(F.interpolate(img, size=(hs, ws), mode="area"))
            yx = (prob[0] >= self.thresholds[0]).nonzero()
            if not len(yx):
                continue
            score = prob[0, yx[:, 0], yx[:, 1]]
            xy = yx.flip(1).float()
            boxes = torch.cat([(2 * xy + 1) / s, (2 * xy + 12) / s], 1)
            offs = reg[0, :, yx[:, 0], yx[:, 1]].T
            keep = nms(boxes, score, 0.5)
            props.append(torch.cat([boxes[keep], score[keep, None], offs[keep]], 1))
        if not props:
            return empty
        p = torch.cat(props)
        p = p[nms(p[:, :4], p[:, 4], 0.7)]
        boxes = _square(_regress(p[:, :4], p[:, 5:9]))

        # stage 2: R-Net on 24×24 crops
        prob, reg = self.rnet(self._crops(img, boxes, 24))
        keep = prob >= self.thresholds[1]
        boxes, prob, reg = boxes[keep], prob[keep], reg[keep]
        if not len(boxes):
            return empty
        keep = nms(boxes, prob, 0.7)
        boxes = _square(_regress(boxes[keep], reg[keep]))

        # stage 3: O-Net on 48×48 crops → final boxes and 5 points
        prob, reg, pts = self.onet(self._crops(img, boxes, 48))
        keep = prob >= self.thresholds[2]
        boxes, prob, reg, pts = boxes[keep], prob[keep], reg[keep], pts[keep]
        if not len(boxes):
            return empty
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        points = torch.stack([boxes[:, 0:1] + pts[:, :5] * wh[:, 0:1], boxes[:, 1:2] + pts[:, 5:] * wh[:, 1:2]], -1)
        boxes = _regress(boxes, reg)
        keep = _nms_min(boxes.cpu(), prob.cpu(), 0.7).to(boxes.device)
        boxes, prob, points = boxes[keep], prob[keep], points[keep]
        return Faces(boxes.cpu().double().numpy(), prob.cpu().double().numpy(), points.cpu().double().numpy())


_LOADED: dict[tuple, MTCNN] = {}
# SphereFace's preprocessing (wy1iu/sphereface, preprocess/code/face_detect_demo.m): the setting chapter 2 aligns with
SPHEREFACE_THRESHOLDS = (0.6, 0.7, 0.9)


def load_mtcnn(weights_dir: str | Path | None = None, hint: str = "give a directory with pnet.pt, rnet.pt, onet.pt",
               thresholds: tuple[float, float, float] | None = None, min_size: float | None = None) -> MTCNN:
    """The one MTCNN lookup of every face project: one detector per process, weights folder and settings (data-loader
    workers each load their own). ``None``: the ASSETS copy (the facenet-pytorch wheel's weights), never downloaded at
    run time — missing, it is a :class:`UserError` ending with ``hint`` (how to give weights). ``thresholds`` /
    ``min_size``: the three stage thresholds and the smallest face (default 0.6/0.7/0.7, 20 px)."""
    if weights_dir is None:
        weights_dir = default_weights_dir(hint)
    key = (str(weights_dir), tuple(float(t) for t in thresholds) if thresholds is not None else None, min_size)
    if key not in _LOADED:
        net = MTCNN.from_dir(weights_dir)
        if thresholds is not None:
            if len(thresholds) != 3:
                raise UserError(f"MTCNN thresholds: three values (P-, R-, O-Net), got {list(thresholds)}")
            net.thresholds = tuple(float(t) for t in thresholds)
        if min_size is not None:
            net.min_size = float(min_size)
        _LOADED[key] = net
    return _LOADED[key]


def default_weights_dir(hint: str = "give a directory with pnet.pt, rnet.pt, onet.pt") -> Path:
    """The asset copy of the MTCNN weights (``make assets``), without fetching; a :class:`UserError` if missing."""
    from shared.assets import AssetFetchFailed, AssetUnavailable

    try:
        return asset_weights_dir(fetch=False)
    except (AssetUnavailable, AssetFetchFailed) as exc:
        raise UserError(f"MTCNN weights unavailable ({exc}); {hint}") from exc


def asset_weights_dir(fetch: bool = True) -> Path:
    """The real MTCNN weights shipped in the facenet-pytorch wheel (fetched by ``python -m shared.assets``),
    extracted into the asset cache; returns the directory holding pnet.pt, rnet.pt, onet.pt (demos, tests).
    ``fetch=False`` (run-time code) never downloads: :class:`shared.assets.AssetUnavailable` if not fetched yet."""
    from shared.assets import asset_file

    files = [asset_file("facenet-pytorch", f"data/{n}.pt", fetch=fetch) for n in ("pnet", "rnet", "onet")]
    return files[0].parent


_WEIGHT_TAGS: dict[str, str] = {}


def _weights_tag(weights_dir: str | Path) -> str:
    """SHA-1 of the three weight files (once per process and folder): cached detections follow the weights."""
    key = str(Path(weights_dir).resolve())
    if key not in _WEIGHT_TAGS:
        h = hashlib.sha1()
        for name in ("pnet", "rnet", "onet"):
            f = Path(weights_dir) / f"{name}.pt"
            h.update(f.read_bytes() if f.is_file() else name.encode())
        _WEIGHT_TAGS[key] = h.hexdigest()[:12]
    return _WEIGHT_TAGS[key]


class CachedDetector:
    """MTCNN whose result for an image file is computed once and kept under ``cache_dir`` (one small ``.npz`` per
    image, keyed by the file's bytes, the weights and the detector's settings), so a test set of 470k faces is
    detected once however often it is evaluated. ``cache_dir=None`` detects every time. ``calls`` counts the images
    the network actually ran on."""

    def __init__(self, weights_dir: str | Path | None = None, thresholds=None, min_size: float | None = None,
                 cache_dir: str | Path | None = None) -> None:
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.thresholds, self.min_size = thresholds, min_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.calls = 0

    def net(self) -> MTCNN:
        return load_mtcnn(self.weights_dir, "set the data's mtcnn_dir or run `make assets`", self.thresholds,
                          self.min_size)

    def _cache_file(self, path: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        net = self.net()
        weights = self.weights_dir or default_weights_dir()
        settings = f"{_weights_tag(weights)}|{net.thresholds}|{net.min_size}|{net.factor}"
        key = hashlib.sha1(path.read_bytes() + settings.encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.npz"

    def __call__(self, image: np.ndarray, path: str | Path | None = None) -> Faces:
        """Detections of ``image`` (whose file is ``path``, the cache key; without a path nothing is cached)."""
        cache = self._cache_file(Path(path)) if path is not None else None
        if cache is not None and cache.is_file():
            with np.load(cache) as z:
                return Faces(z["boxes"], z["scores"], z["points"])
        faces = self.net()(image)
        self.calls += 1
        if cache is not None:
            import io

            from shared.io import atomic_write_bytes

            buf = io.BytesIO()
            np.savez(buf, boxes=faces.boxes, scores=faces.scores, points=faces.points)
            atomic_write_bytes(cache, buf.getvalue())
        return faces
