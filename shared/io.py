"""Image / video / checkpoint I/O with clear errors and atomic writes (never half a file on disk)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

from shared.errors import UserError, one_line

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".y4m"}


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the final file the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temp_files(folder: str | Path, suffix: str) -> list[Path]:
    """Remove the temp files :func:`atomic_path` leaves in ``folder`` when its process is killed mid-write
    (``.<stem>.<8 random chars><suffix>``) — call it only where no other process is writing."""
    import re

    pattern = re.compile(rf"^\..+\.[a-z0-9_]{{8}}{re.escape(suffix)}$")
    folder = Path(folder)
    removed = [p for p in folder.glob(f".*{suffix}") if p.is_file() and pattern.match(p.name)] if folder.is_dir() \
        else []
    for p in removed:
        p.unlink()
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# pickle protocol 2, then the 64-bit magic number of the legacy (pre-zip) torch.save format
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def load_checkpoint_file(path: str | Path, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)`` with user-facing errors for missing or unreadable files."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    with path.open("rb") as f:
        legacy = f.read(len(_LEGACY_TORCH_MAGIC)) == _LEGACY_TORCH_MAGIC  # torch.save before 1.6
    if not (zipfile.is_zipfile(path) or legacy):
        raise UserError(f"not a PyTorch checkpoint (expected a torch.save file): {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"checkpoint {path} holds objects other than tensors and plain containers; "
                        "refusing to unpickle it (weights_only=True)") from exc
    except Exception as exc:  # noqa: BLE001 - zip/format errors of any kind mean a bad file
        raise UserError(f"cannot load checkpoint {path}: {one_line(exc)[:200]}") from exc


def decode_image(path: str | Path) -> np.ndarray:
    """The file's pixels as decoded (OpenCV channel order: gray, BGR or BGRA), 16-bit scaled to 8-bit; a corrupt or
    unsupported file is a :class:`UserError`."""
    data = np.fromfile(path, dtype=np.uint8)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:  # e.g. a header that declares more pixels than OpenCV accepts (CV_IO_MAX_IMAGE_PIXELS)
        msg = one_line(exc)
        if "CV_IO_MAX_IMAGE_PIXELS" in msg:
            msg = "its header declares more pixels than the decoder accepts (OpenCV's CV_IO_MAX_IMAGE_PIXELS)"
        raise UserError(f"cannot decode image {path}: {msg[:200]}") from exc
    if img is None:
        raise UserError(f"cannot decode image (corrupt or unsupported format): {path}")
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 H×W×3 RGB (gray is expanded, alpha dropped; 16-bit is scaled to 8-bit)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    img = decode_image(path)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write a uint8 H×W×3 RGB (or H×W gray) image atomically; format from the suffix."""
    path = Path(path)
    if img.dtype != np.uint8:
        raise TypeError(f"write_image expects uint8, got {img.dtype}")
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, buf = cv2.imencode(path.suffix or ".png", bgr)
    if not ok:
        raise UserError(f"cannot encode image as {path.suffix!r}: {path}")
    atomic_write_bytes(path, buf.tobytes())


def tensor_to_image(x: torch.Tensor) -> np.ndarray:
    """3×H×W tensor in [0, 1] → uint8 H×W×3 (clamped and rounded, as the metrics see it)."""
    return (x.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def labelled_strip(panels: list[tuple[str, torch.Tensor]], font_scale: float = 0.6, thickness: int = 2,
                   origin: tuple[int, int] = (6, 22)) -> np.ndarray:
    """(label, 3×H×W tensor in [0, 1]) panels of one size side by side as uint8 H×(k·W)×3, each labelled in yellow
    at ``origin`` (test-image grids of the SR projects)."""
    arrays = []
    for label, img in panels:
        arr = tensor_to_image(img).copy()
        cv2.putText(arr, label, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 0), thickness, cv2.LINE_AA)
        arrays.append(arr)
    return np.concatenate(arrays, axis=1)


def comparison_crops(panels: list[tuple[str, np.ndarray]], box: tuple[int, int, int, int] | None = None,
                     size: int = 192) -> np.ndarray:
    """The picture a person looks at: the same region of each panel (label, uint8 H×W×3 image — the LR input and the
    HR results of any sizes; ``box`` = (x0, y0, x1, y1) as fractions of the image, default the centre half), each
    scaled to ``size`` px high with nearest neighbours (pixels stay visible) and labelled, side by side."""
    x0, y0, x1, y1 = box or (0.25, 0.25, 0.75, 0.75)
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"box must be fractions x0 < x1, y0 < y1 in [0, 1], got {box}")
    out = []
    for label, img in panels:
        h, w = img.shape[:2]
        crop = img[int(y0 * h) : max(int(y1 * h), int(y0 * h) + 1), int(x0 * w) : max(int(x1 * w), int(x0 * w) + 1)]
        width = max(1, round(size * crop.shape[1] / crop.shape[0]))
        crop = cv2.resize(np.ascontiguousarray(crop), (width, size), interpolation=cv2.INTER_NEAREST)
        crop = np.repeat(crop[..., None], 3, axis=2) if crop.ndim == 2 else crop[..., :3].copy()
        cv2.putText(crop, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(crop, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
        out.append(crop)
        out.append(np.full((size, 4, 3), 255, np.uint8))  # a white gap between panels
    return np.concatenate(out[:-1], axis=1)


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 → float 3×H×W in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0


def open_video(path: str | Path) -> tuple[float, int | None, tuple[int, int]]:
    """(fps, frame count or None when the container does not say, (width, height)) of a video, without decoding
    it."""
    import av

    path = Path(path)
    if not path.is_file():
        raise UserError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"no video stream in {path}")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            return fps, (int(stream.frames) or None), (stream.codec_context.width, stream.codec_context.height)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - FFmpeg errors of any kind mean a bad file
        raise UserError(f"cannot decode video {path}: {one_line(exc)}") from exc


def iter_video(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video frame by frame (H×W×3 uint8 RGB): memory does not grow with the length of the video. A
    decoding error, at any frame, is a :class:`UserError`; so is a video without frames."""
    import av

    path = Path(path)
    if not path.is_file():
        raise UserError(f"video not found: {path}")
    n = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"no video stream in {path}")
            for frame in container.decode(container.streams.video[0]):
                if max_frames is not None and n >= max_frames:
                    break
                n += 1
                yield frame.to_ndarray(format="rgb24")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - FFmpeg errors of any kind mean a bad file
        raise UserError(f"cannot decode video {path}: {one_line(exc)}") from exc
    if n == 0:
        raise UserError(f"video has no decodable frames: {path}")


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video with PyAV → (T×H×W×3 uint8 RGB frames, fps)."""
    fps, _, _ = open_video(path)
    return np.stack(list(iter_video(path, max_frames))), fps


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from an image file's header, without decoding its pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {one_line(exc)}") from exc


def iter_frames(files: list[Path]) -> Iterator[np.ndarray]:
    """The frames of a frame folder, read one at a time; every file's header is checked first (same size as the
    first frame, readable), so a bad frame fails before any work."""
    if not files:
        raise UserError("no frames given")
    sizes = [image_size(f) for f in files]
    for f, size in zip(files, sizes):
        if size != sizes[0]:
            raise UserError(f"frame {f.name} is {size[0]}×{size[1]}, but {files[0].name} is "
                            f"{sizes[0][0]}×{sizes[0][1]}: all frames of a folder must have one size")
    for f in files:
        yield read_image(f)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success its files move into ``path`` (created when missing;
    files of an existing folder that are not written are left as they are). On failure nothing reaches ``path``."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if not path.exists():
            os.rename(tmp, path)
        else:
            for f in sorted(tmp.rglob("*")):
                if f.is_file():
                    dest = path / f.relative_to(tmp)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(f, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)  # our own temporary folder (and whatever we had written into it)


X264_LOOKAHEAD = 40  # x264's own rc-lookahead (preset medium)
# look-ahead 0: x264 with no queue at all — no rate-control look-ahead (so no mb-tree), no B-frames, one reference
# frame, threads within a frame (slices) rather than frames in flight. About 6.5 frames held, whatever the length and
# the number of cores; the cost is the file: about twice the bytes at the same crf (bench/encoder_memory.py)
X264_LOW_MEMORY = "rc-lookahead=0:sync-lookahead=0:bframes=0:ref=1:sliced-threads=1"


def encoder_bytes(width: int, height: int, lookahead: int = X264_LOOKAHEAD) -> int:
    """Memory libx264 holds while encoding width×height frames: about (``lookahead`` + 18) frames at 3.2 bytes per
    pixel (measured with ``bench/encoder_memory.py``: 2560×1440 → 0.63 GiB at rc-lookahead 40, 0.28 GiB at 8,
    reached after ~50 frames and flat from there on); ``lookahead`` 0 = :data:`X264_LOW_MEMORY`, about 6.5 frames
    (7680×4320 → 0.61 GiB)."""
    return int((6.5 if lookahead == 0 else lookahead + 18) * 3.2 * width * height)


def encoder_lookahead(width: int, height: int, budget: int) -> int:
    """The largest x264 rc-lookahead (4 … 40) whose :func:`encoder_bytes` fit ``budget`` bytes; 0 (the low-memory
    settings, :data:`X264_LOW_MEMORY`) if none does."""
    for la in range(X264_LOOKAHEAD, 3, -1):
        if encoder_bytes(width, height, la) <= budget:
            return la
    return 0


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0, crf: int = 18,
                lookahead: int | None = None) -> None:
    """Encode uint8 H×W×3 RGB frames as H.264 (yuv420p) atomically; odd sizes are padded by one pixel.
    ``lookahead``: x264's rc-lookahead (frames it queues before coding one; None = x264's 40; 0 = no queue at all,
    :data:`X264_LOW_MEMORY`) — the encoder's memory grows with it (:func:`encoder_bytes`), not with the length of
    the video."""
    from fractions import Fraction

    import av

    path = Path(path)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = w + w % 2, h + h % 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf)}
                if lookahead == 0:
                    stream.options |= {"x264-params": X264_LOW_MEMORY}
                elif lookahead is not None:
                    stream.options |= {"rc-lookahead": str(lookahead)}
            if frame.shape[0] % 2 or frame.shape[1] % 2:
                frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise UserError(f"no frames to write to {path}")
        for packet in stream.encode():
            container.mux(packet)


def list_files(root: str | Path, exts: set[str]) -> list[Path]:
    """Sorted files under ``root`` (recursive) with one of ``exts``; a missing root is a :class:`UserError`."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"path not found: {root}")
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())
