"""The "Blockwise Dataset" (Sec. 1.2.2): one row per analysed block of every page, built with Lightning ``predict``
(pages spread over the devices, each page analysed by exactly one rank; rank 0 writes one CSV in page order).

Columns: 1) global — file, block index, colour (of the simulator region under the block centre, when known);
2) blockwise — grid, row, col, x/y ranges, mean L*a*b*, MDE, DDE, MDL, DDL, label (1 defect, 0 none, −1 ambiguous),
candidate, ROI; 3) local-defect features, only for candidates — light, size, major, minor, severity.

    python -m projects.printdefect.dataset data/printdefect/train blocks.csv [--devices 2] [--dpi 600]
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from shared.errors import UserError, report
from shared.io import atomic_write_text
from shared.outputs import check_output

COLUMNS = ("file", "block_index", "color", "grid", "row", "col", "x0", "x1", "y0", "y1", "mean_L", "mean_a",
           "mean_b", "MDE", "DDE", "MDL", "DDL", "label", "candidate", "roi", "light", "size", "major", "minor",
           "severity")


def blockwise_rows(table: dict[str, np.ndarray], labels: np.ndarray, file: str,
                   regions: list[dict] | None = None) -> list[dict]:
    """Rows of the valid blocks of one page (``table`` from ``BlockwiseDetector.analyse``)."""
    rows = []
    regions = regions or []
    for i in np.nonzero(table["valid"])[0]:
        cx, cy = (table["x0"][i] + table["x1"][i]) / 2, (table["y0"][i] + table["y1"][i]) / 2
        color = next((r["color"] for r in regions
                      if r["box"][0] <= cx < r["box"][2] and r["box"][1] <= cy < r["box"][3]), "")
        row = {"file": file, "block_index": int(i), "color": color}
        for k in ("grid", "row", "col", "x0", "x1", "y0", "y1", "roi"):
            row[k] = int(table[k][i])
        for k in ("mean_L", "mean_a", "mean_b", "MDE", "DDE", "MDL", "DDL"):
            row[k] = float(table[k][i])
        row["label"], row["candidate"] = int(labels[i]), int(table["candidate"][i])
        cand = bool(table["candidate"][i])
        row["light"] = int(table["light"][i]) if cand else None
        for k in ("size", "major", "minor", "severity"):
            v = float(table[k][i])
            row[k] = v if cand and not math.isnan(v) else None
        rows.append(row)
    return rows


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


class BlockwiseDatasetWriter(BasePredictionWriter):
    """Gathers every rank's rows and writes them as one CSV (``out``, rank 0), sorted by page then block index."""

    def __init__(self, out: str | Path) -> None:
        super().__init__(write_interval="epoch")
        self.out = Path(out)
        self.rows = 0

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        from shared.datamodule import all_ranks

        pages = sorted((page for part in all_ranks(predictions) for page in part if page),
                       key=lambda page: page[0]["file"])
        rows = [r for page in pages for r in page]
        self.rows = len(rows)
        if trainer.global_rank == 0:
            atomic_write_text(self.out, to_csv(rows))


def main(argv: list[str] | None = None) -> int:
    import lightning.pytorch as pl

    from projects.printdefect.data import PageDataModule, PageDataset
    from projects.printdefect.model import BlockwiseDetector
    from projects.printdefect.module import PrintDefectModule

    ap = argparse.ArgumentParser(description="the Blockwise Dataset of a folder of pages (CSV)")
    ap.add_argument("pages")
    ap.add_argument("out")
    ap.add_argument("--dpi", type=float, default=None)
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--devices", default="1")
    args = ap.parse_args(argv)
    try:
        pages = PageDataset(args.pages, args.dpi, require_labels=False)  # bad input fails before any rank starts
        check_output(args.out, [args.pages, *pages.pages], folder=False)
        dm = PageDataModule(predict_dir=args.pages, dpi=args.dpi)
        module = PrintDefectModule(BlockwiseDetector())
        devices = int(args.devices) if args.devices.lstrip("-").isdigit() else args.devices
        writer = BlockwiseDatasetWriter(args.out)
        trainer = pl.Trainer(accelerator=args.accelerator, devices=devices, logger=False, callbacks=[writer],
                             enable_progress_bar=False)
        trainer.predict(module, datamodule=dm, return_predictions=False)
    except UserError as exc:
        return report(exc)
    if trainer.global_rank == 0:
        print(f"blockwise dataset: {writer.rows} blocks of {len(pages)} pages written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
