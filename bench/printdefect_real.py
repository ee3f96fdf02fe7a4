"""Print defects (issue 19): false alarms on the real scanned pages of the team's asset list (no defects on them).

    python bench/printdefect_real.py CKPT[::MODEL] [CKPT[::MODEL] …] [--out outputs/printdefect_real]

(MODEL: the conf/printdefect/model preset the checkpoint was trained with, e.g. ``::chapter``; default blockwise.)

The pages come out of the ocrmypdf sdist (``make assets``): ``c03-29.pdf`` (a colour book page, JPEG, 150 dpi:
paper texture, show-through, JPEG blocks, an illustration), ``epson.pdf`` (a 1-bit 300-dpi A4 printout, CCITT G4)
and ``linn.png`` (1-bit, 300 dpi). Each image is written as a PNG with its resolution, then every checkpoint runs
through ``python -m projects.printdefect.infer`` exactly as a user would run it: with ``infer_options.mask=auto``
(the pages carry no mask; the automatic mask keeps the paper and drops the printed content) and, for comparison,
``infer_options.require_mask=false`` (the whole page, text and figures included). Every detection on these pages is
a false alarm; the table gives the count per page and the analysed share of each page.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"c03-29": ("tests/resources/c03-29.pdf", 150.0), "epson": ("tests/resources/epson.pdf", 300.0),
         "linn": ("tests/resources/linn.png", 300.0)}


def _stream(pdf: bytes, filt: bytes) -> tuple[dict, bytes]:
    """The first image XObject with filter ``filt``: its dictionary (as text) and its raw stream bytes."""
    for m in re.finditer(rb"\sobj\s*(<<.*?>>)\s*stream\r?\n", pdf, re.S):
        head = m.group(1)
        if b"/Image" not in head or not re.search(rb"/Filter\s*/" + filt + rb"\b", head):
            continue
        text = head.decode("latin-1")
        length = re.search(r"/Length\s+(\d+)(\s+\d+\s+R)?", text)
        n = int(length.group(1))
        if length.group(2):                              # an indirect length: "n 0 obj <len> endobj"
            n = int(re.search(rb"(?:^|\s)" + str(n).encode() + rb"\s+0\s+obj\s*(\d+)", pdf).group(1))
        return {"head": text}, pdf[m.end():m.end() + n]
    raise ValueError(f"no {filt.decode()} image in the PDF")


def _ccitt_to_tiff(data: bytes, w: int, h: int, k: int) -> bytes:
    """Wrap a CCITT G4 (k < 0) / G3 stream in a one-strip TIFF so that Pillow (libtiff) decodes it."""
    tags = [(256, 4, w), (257, 4, h), (258, 3, 1), (259, 3, 4 if k < 0 else 3), (262, 3, 0), (273, 4, 0),
            (277, 3, 1), (278, 4, h), (279, 4, len(data))]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(tags) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at) + struct.pack("<H", len(tags)))
    for tag, typ, val in tags:
        val = data_at if tag == 273 else val
        out += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
    out += struct.pack("<I", 0) + data
    return bytes(out)


def extract(folder: Path) -> dict[str, Path]:
    """The three real pages as PNGs (RGB, dpi in the file) in ``folder``."""
    from PIL import Image

    from projects.printdefect.png import encode_png
    from shared.assets import asset_file

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (member, dpi) in PAGES.items():
        src = asset_file("ocrmypdf", member)
        if src.suffix == ".png":
            img = Image.open(src).convert("RGB")
        elif name == "c03-29":
            _, data = _stream(src.read_bytes(), b"DCTDecode")
            img = Image.open(io.BytesIO(data)).convert("RGB")
        else:
            info, data = _stream(src.read_bytes(), b"CCITTFaxDecode")
            w, h = (int(re.search(rf"/{k}\s+(\d+)", info["head"]).group(1)) for k in ("Width", "Height"))
            k = int(re.search(r"/K\s+(-?\d+)", info["head"]).group(1))
            img = Image.open(io.BytesIO(_ccitt_to_tiff(data, w, h, k))).convert("RGB")
            if np.asarray(img).mean() < 128:             # PDF's BlackIs1 = false: 0 is black
                img = Image.fromarray(255 - np.asarray(img))
        path = folder / f"{name}.png"
        path.write_bytes(encode_png(np.asarray(img), None, dpi))
        out[name] = path
    return out


def run_infer(ckpt: Path, model: str, pages: Path, out: Path, options: list[str]) -> dict[str, dict]:
    res = subprocess.run([sys.executable, "-m", "projects.printdefect.infer", f"model={model}", f"ckpt_path={ckpt}",
                          f"input={pages}", f"output={out}", *options], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    rows = {r["page"]: r for r in csv.DictReader((out / "pages.csv").open())}
    for name in rows:
        rec = json.loads((out / f"{Path(name).stem}.json").read_text())
        rows[name]["detections"] = rec["detections"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpts", nargs="+")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "printdefect_real")
    args = ap.parse_args()
    pages = extract(args.out / "pages")
    from projects.printdefect.page import auto_mask, read_page

    share = {p.name: float(auto_mask((pg := read_page(p, require_mask=False)).rgb, pg.dpi).mean())
             for p in pages.values()}
    print("| checkpoint | mask | " + " | ".join(f"{p.stem} ({read_page(p, require_mask=False).dpi:g} dpi)"
                                               for p in pages.values()) + " | false alarms/page |")
    print("|---|---|" + "---|" * (len(pages) + 1))
    for spec in args.ckpts:
        ckpt, _, model = spec.partition("::")
        ckpt, model = Path(ckpt), model or "blockwise"
        for label, opts in (("auto", ["infer_options.mask=auto"]),
                            ("none (whole page)", ["infer_options.require_mask=false"])):
            tag = "auto" if label == "auto" else "whole"
            rows = run_infer(ckpt, model, args.out / "pages", args.out / f"{ckpt.parent.parent.name}_{tag}", opts)
            cells = []
            for p in pages.values():
                n = int(rows[p.name]["n_defects"])
                cells.append(f"{n}" + (f" (analysed {share[p.name]:.0%})" if tag == "auto" else ""))
            total = sum(int(r["n_defects"]) for r in rows.values()) / len(rows)
            print(f"| {ckpt.parent.parent.name} | {label} | " + " | ".join(cells) + f" | {total:.2f} |")
            for r in rows.values():
                for d in r["detections"]:
                    print(f"    {r['page']} [{label}]: {d['type']} box {d['box']} size {d['size_mm2']:.2f} mm² "
                          f"severity {d['severity']}")


if __name__ == "__main__":
    main()
