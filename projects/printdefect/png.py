"""A fast reader for the common scanned-page PNG: 8-bit gray / gray+alpha / RGB / RGBA, not interlaced.

A 600-dpi letter page is 5100×6600 RGBA (135 MB of pixels); a general decoder (libpng through OpenCV) spends over a
second on it. Here the IDAT stream is inflated with ISA-L (``isal``, plain ``zlib`` when it is missing), the row
filters are undone by a compiled kernel and the alpha channel becomes the mask in the same pass over the pixels —
about 3× faster on one page. Anything else (16-bit, palette, interlaced) returns ``None`` and the caller falls back
to the general decoder; a corrupt file is a :class:`UserError`. ``pHYs`` gives the resolution.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import UserError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}          # colour type → samples per pixel (8-bit only)

try:
    from isal import isal_zlib as _inflater
except ImportError:  # pragma: no cover - isal is a dependency; zlib gives the same bytes, only slower
    _inflater = zlib


@dataclass
class DecodedPNG:
    rgb: np.ndarray                  # uint8 H×W×3, RGB order
    mask: np.ndarray | None          # bool H×W (alpha > 127) when the file has alpha
    dpi: float | None                # from pHYs (pixels per metre), if present


def _chunks(data: memoryview, path: Path):
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind = bytes(data[pos + 4:pos + 8])
        if pos + 12 + n > len(data):
            raise UserError(f"cannot decode image (truncated PNG chunk {kind!r}): {path}")
        yield kind, data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IEND":
            return
    raise UserError(f"cannot decode image (PNG without IEND, truncated?): {path}")


class _Inflate(threading.Thread):
    """Inflates the IDAT pieces into ``raw`` (never past its end) and publishes how many bytes are ready."""

    PIECE = 1 << 20

    def __init__(self, pieces: list[memoryview], raw: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.pieces, self.raw = pieces, raw
        self.ready, self.finished, self.error = 0, False, None
        self.cond = threading.Condition()

    def _publish(self, out: bytes) -> bool:
        n = min(len(out), self.raw.size - self.ready)
        self.raw[self.ready:self.ready + n] = np.frombuffer(out, np.uint8, n)
        with self.cond:
            self.ready += n
            self.cond.notify()
        return self.ready < self.raw.size

    def run(self) -> None:
        try:
            d = _inflater.decompressobj()
            for piece in self.pieces:
                for i in range(0, len(piece), self.PIECE):
                    data = piece[i:i + self.PIECE]
                    while data:  # bounded output per call: a corrupt stream cannot balloon
                        if not self._publish(d.decompress(data, self.PIECE * 4)):
                            return
                        data = d.unconsumed_tail
            self._publish(d.flush())
        except Exception as e:  # noqa: BLE001 - zlib.error / isal error: a corrupt stream
            self.error = e
        finally:
            with self.cond:
                self.finished = True
                self.cond.notify()

    def wait_for(self, nbytes: int) -> int:
        with self.cond:
            while self.ready < nbytes and not self.finished:
                self.cond.wait()
            return self.ready


def read_png(path: str | Path, rows_per_step: int = 64) -> DecodedPNG | None:
    """Decode ``path`` if it is a PNG this fast path supports, else ``None`` (not a PNG, or another pixel format).

    Two threads: one inflates the stream, the other undoes the row filters (and splits off the mask) of the rows
    inflated so far, ``rows_per_step`` at a time; both release the GIL.
    """
    try:
        from projects.printdefect.kernels import png_rows
    except ImportError:  # no numba on this platform: the general decoder does it
        return None
    path = Path(path)
    data = memoryview(path.read_bytes())
    if bytes(data[:8]) != SIGNATURE:
        return None
    header, idat, dpi = None, [], None
    for kind, body in _chunks(data, path):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"pHYs" and len(body) >= 9:
            px, _, unit = struct.unpack(">IIB", body[:9])
            if unit == 1 and px > 0:
                dpi = round(px * 0.0254, 2)
    if header is None:
        raise UserError(f"cannot decode image (PNG without IHDR): {path}")
    w, h, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in CHANNELS or interlace != 0 or w == 0 or h == 0:
        return None
    bpp = CHANNELS[colour]
    line = w * bpp + 1
    if h * line > 1100 * max(1, sum(len(b) for b in idat)):  # deflate cannot expand more than ~1032:1
        raise UserError(f"cannot decode image (PNG header says {w}x{h}, far more than its data holds): {path}")
    raw = np.empty(h * line, np.uint8)
    rgb = np.empty((h, w, 3), np.uint8)
    mask = np.empty((h, w) if bpp in (2, 4) else (1, 1), np.bool_)
    inflate = _Inflate(idat, raw)
    inflate.start()
    done = 0
    while done < h:
        ready = inflate.wait_for(min(h, done + rows_per_step) * line) // line
        if ready <= done:
            break
        bad = png_rows(raw, w, bpp, done, ready, rgb, mask)
        if bad >= 0:
            inflate.join()
            raise UserError(f"cannot decode image (unknown PNG filter on row {bad}): {path}")
        done = ready
    inflate.join()
    if inflate.error is not None:
        raise UserError(f"cannot decode image (corrupt PNG data: {inflate.error}): {path}")
    if done < h:
        raise UserError(f"cannot decode image (PNG data shorter than {w}x{h}): {path}")
    return DecodedPNG(rgb, mask if bpp in (2, 4) else None, dpi)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray, mask: np.ndarray | None = None, dpi: float | None = None, level: int = 1) -> bytes:
    """An 8-bit RGB (or RGBA with alpha = 255 · ``mask``) PNG with the resolution in pHYs: unfiltered rows, deflated
    by ISA-L at ``level`` (a 600-dpi A4 page in about half a second; plain zlib when isal is missing)."""
    h, w = rgb.shape[:2]
    bpp = 3 if mask is None else 4
    raw = np.empty((h, 1 + w * bpp), np.uint8)
    raw[:, 0] = 0                                                   # filter type None on every row
    px = raw[:, 1:].reshape(h, w, bpp)
    px[..., :3] = rgb
    if mask is not None:
        px[..., 3] = np.where(mask, 255, 0)
    body = _inflater.compress(raw.data, level) if _inflater is not zlib else zlib.compress(raw.data, level)
    out = [SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6 if mask is not None else 2, 0, 0, 0))]
    if dpi:
        ppm = int(round(dpi / 0.0254))
        out.append(_chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1)))
    piece = 1 << 24
    out += [_chunk(b"IDAT", body[i:i + piece]) for i in range(0, len(body), piece)]
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)
