"""The fast page-PNG reader against OpenCV's libpng on files written with every row filter, colour type and pHYs."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from projects.printdefect.png import read_png
from shared.errors import UserError


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def encode_png(px: np.ndarray, colour: int, filters: list[int], dpi: float | None = None, depth: int = 8,
               interlace: int = 0) -> bytes:
    """A plain Python PNG encoder: row y uses filter ``filters[y % len(filters)]`` (0 None … 4 Paeth)."""
    h, w, bpp = px.shape
    rows = px.reshape(h, w * bpp).astype(int)
    out = bytearray()
    for y in range(h):
        f = filters[y % len(filters)]
        out.append(f)
        for x in range(w * bpp):
            a = rows[y, x - bpp] if x >= bpp else 0
            b = rows[y - 1, x] if y > 0 else 0
            c = rows[y - 1, x - bpp] if y > 0 and x >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][f]
            out.append((rows[y, x] - pred) % 256)
    return assemble(w, h, colour, bytes(out), dpi, depth, interlace)


def assemble(w: int, h: int, colour: int, raw: bytes, dpi: float | None = None, depth: int = 8,
             interlace: int = 0) -> bytes:
    """Signature, IHDR, optional pHYs, the deflated ``raw`` scanlines over two IDAT chunks, IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace))
    if dpi:
        ppm = round(dpi / 0.0254)
        data += chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1))
    z = zlib.compress(raw, 6)
    data += chunk(b"IDAT", z[: len(z) // 2]) + chunk(b"IDAT", z[len(z) // 2:])   # split over two IDATs
    return data + chunk(b"IEND", b"")


@pytest.mark.parametrize("colour,bpp", [(6, 4), (2, 3), (0, 1), (4, 2)])
def test_decodes_every_filter_like_libpng(tmp_path, colour, bpp):
    rng = np.random.default_rng(colour)
    px = rng.integers(0, 256, (13, 11, bpp), dtype=np.uint8)
    px[..., -1] = np.where(rng.random((13, 11)) < 0.5, 0, 255) if bpp in (2, 4) else px[..., -1]
    path = tmp_path / "p.png"
    path.write_bytes(encode_png(px, colour, [0, 1, 2, 3, 4, 4, 3, 2, 1], dpi=600))
    ref = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    ref = ref[..., None] if ref.ndim == 2 else ref
    got = read_png(path, rows_per_step=2)   # several steps of the two-thread pipeline
    assert got is not None and got.dpi == 600
    if bpp >= 3:
        assert np.array_equal(got.rgb, cv2.cvtColor(ref[..., :3], cv2.COLOR_BGR2RGB))
    else:
        assert np.array_equal(got.rgb, np.repeat(ref[..., :1], 3, axis=2))
    if bpp in (2, 4):
        assert np.array_equal(got.mask, ref[..., -1] > 127)
    else:
        assert got.mask is None


def test_other_formats_are_left_to_the_general_decoder(tmp_path):
    px16 = np.zeros((4, 5, 3), np.uint8)
    (tmp_path / "deep.png").write_bytes(encode_png(px16, 2, [0], depth=16))
    (tmp_path / "laced.png").write_bytes(encode_png(px16, 2, [0], interlace=1))
    (tmp_path / "plain.tif").write_bytes(b"II*\x00")
    assert read_png(tmp_path / "deep.png") is None and read_png(tmp_path / "laced.png") is None
    assert read_png(tmp_path / "plain.tif") is None
    ok = encode_png(np.zeros((4, 5, 3), np.uint8), 2, [1])
    assert read_png(_write(tmp_path / "nodpi.png", ok)).dpi is None


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_corrupt_files_are_user_errors(tmp_path):
    good = encode_png(np.full((6, 7, 4), 9, np.uint8), 6, [4])
    i = good.index(b"IDAT") + 4
    bad_stream = good[:i] + b"\x00\x00" + good[i + 2:]           # no zlib header
    with pytest.raises(UserError, match="corrupt PNG data"):
        read_png(_write(tmp_path / "a.png", bad_stream))
    with pytest.raises(UserError, match="truncated"):
        read_png(_write(tmp_path / "b.png", good[: len(good) - 30]))
    scanlines = bytes([7] + [0] * 28) * 6            # filter type 7 does not exist
    with pytest.raises(UserError, match="unknown PNG filter on row 0"):
        read_png(_write(tmp_path / "c.png", assemble(7, 6, 6, scanlines)))
    with pytest.raises(UserError, match="says 100000x90000, far more than its data holds"):
        read_png(_write(tmp_path / "e.png", assemble(100000, 90000, 6, bytes(29))))
    with pytest.raises(UserError, match="shorter than 7x6"):
        read_png(_write(tmp_path / "d.png", assemble(7, 6, 6, bytes(29 * 5))))


@pytest.mark.parametrize(("with_mask", "dpi"), [(True, 600.0), (False, 300.0), (True, None)])
def test_page_writer_is_read_back_by_pillow(tmp_path, with_mask, dpi):
    """``png.encode_png`` (the simulator's page writer) against Pillow's decoder: pixels, alpha = mask, pHYs dpi."""
    from PIL import Image

    from projects.printdefect.png import encode_png

    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    mask = rng.random((37, 53)) < 0.6
    (tmp_path / "p.png").write_bytes(encode_png(rgb, mask if with_mask else None, dpi))
    with Image.open(tmp_path / "p.png") as im:
        px = np.asarray(im)
        assert im.mode == ("RGBA" if with_mask else "RGB")
        assert (im.info.get("dpi") is None) == (dpi is None)
        if dpi:
            assert im.info["dpi"][0] == pytest.approx(dpi, abs=0.01)
    assert np.array_equal(px[..., :3], rgb)
    if with_mask:
        assert np.array_equal(px[..., 3], np.where(mask, 255, 0))
