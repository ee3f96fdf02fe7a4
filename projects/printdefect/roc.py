"""Fig. 1.11 from a ``--multirun`` over the cost: every job's first results table → one ROC per test set.

    python -m projects.printdefect.roc logs/printdefect/ablation_cost/multiruns/<time> [--chosen 2] [--out DIR]

Writes ``roc_<test set>.png`` and ``roc.md``/``roc.json`` (cost, miss rate, false alarm per job) into ``--out``
(default: the sweep directory) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from projects.printdefect.module import plot_roc
from shared.report import Table, write_report


def collect(sweep: Path) -> list[dict]:
    rows = []
    for res in sorted(sweep.glob("*/results.json")):
        tables = json.loads(res.read_text())
        for r in tables[0]["rows"] if tables else []:
            if {"test set", "cost", "miss rate", "false alarm"} <= set(r):
                keep = {k: r[k] for k in ("test set", "cost", "miss rate", "false alarm")}
                rows.append(keep | {"job": res.parent.name})
    return sorted(rows, key=lambda r: (r["test set"], r["cost"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ROC (Fig. 1.11) from a cost sweep")
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--chosen", type=float, default=2.0, help="operating point to circle (the paper: cost 2)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = collect(args.sweep)
    if not rows:
        sys.stderr.write(f"error: no results.json with miss rate / false alarm under {args.sweep}\n")
        return 2
    out = args.out or args.sweep
    for r in rows:
        r["false alarm"] = float(r["false alarm"]) if r["false alarm"] not in (None, "nan") else float("nan")
        r["miss rate"] = float(r["miss rate"]) if r["miss rate"] not in (None, "nan") else float("nan")
    plots = plot_roc(rows, out, args.chosen)
    table = Table("ROC over the misclassification cost (Fig. 1.11)", ["test set", "cost", "miss rate", "false alarm",
                                                                       "job"], rows,
                  notes=[f"plot: {p}" for p in plots] + [f"circled: cost {args.chosen:g}"])
    write_report([table], out, name="roc")
    print(table.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
