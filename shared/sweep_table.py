"""Collect the results of many runs (a ``--multirun`` sweep or any run directories) into one table.

    python -m shared.sweep_table logs/zsm/vimeo/multiruns/<time>                  # every job of a sweep
    python -m shared.sweep_table RUN_DIR [RUN_DIR …] --metric PSNR-Y --label model # paper layout: sets × runs
    python -m shared.sweep_table DIR --by QF --where 'Method!=Bicubic' --metric 'Set5 PSNR' --label model

Each run directory holds ``results.json`` (written by the driver) and ``.hydra/overrides.yaml``. The long table lists
one row per (run, test set) with every metric; with ``--metric`` a second table puts test sets in rows and runs
in columns — the layout of the dissertation's ablation tables. Both are written as markdown + CSV (default:
``sweep_table.md``/``.csv`` in the first directory given) and printed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import yaml

from shared.io import atomic_write_text
from shared.report import Table


def find_runs(paths: list[Path]) -> list[Path]:
    runs: list[Path] = []
    for p in paths:
        if (p / "results.json").is_file():
            runs.append(p)
        elif p.is_dir():
            runs += sorted((d for d in p.iterdir() if (d / "results.json").is_file()),
                           key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    return runs


def run_label(run: Path, key: str | None) -> str:
    if key == "dir":
        return run.name
    ov_file = run / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(ov_file.read_text()) if ov_file.is_file() else []
    overrides = overrides or []
    if key:
        for ov in overrides:
            k, _, v = ov.lstrip("+~").partition("=")
            if k == key:
                return v
    return " ".join(overrides) or run.name


def collect(runs: list[Path], label_key: str | None = None, by: str = "test set") -> tuple[list[dict], list[str]]:
    rows, metric_cols = [], []
    for run in runs:
        tables = json.loads((run / "results.json").read_text())
        if not tables:
            continue
        first = tables[0]
        for r in first["rows"]:
            row = {"run": run_label(run, label_key), by: r.get(by, r.get(first["columns"][0])), **r}
            rows.append(row)
        metric_cols += [c for c in first["columns"] if c not in metric_cols and c != by]
    return rows, metric_cols


def row_filter(expr: str):
    """``KEY=VALUE`` or ``KEY!=VALUE`` on a row's cell (compared as text)."""
    neg = "!=" in expr
    key, _, value = expr.partition("!=" if neg else "=")
    if not key or not _:
        raise ValueError(f"--where expects KEY=VALUE or KEY!=VALUE, got {expr!r}")
    return lambda row: (str(row.get(key)) == value) != neg


def build_tables(rows: list[dict], metric_cols: list[str], metric: str | None, by: str) -> list[Table]:
    tables = [Table("Runs × test sets", ["run", by, *metric_cols], rows)]
    if metric:
        runs = list(dict.fromkeys(r["run"] for r in rows))
        sets = list(dict.fromkeys(r[by] for r in rows))
        pivot = []
        for s in sets:
            line = {by: s}
            for r in rows:
                if r[by] == s:
                    line[r["run"]] = r.get(metric)
            pivot.append(line)
        tables.append(Table(f"{metric}: test sets × runs", [by, *runs], pivot))
    return tables


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=table.columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(table.rows)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.sweep_table", description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="a multirun directory or run directories")
    ap.add_argument("--metric", help="pivot this metric into a test-set × run table (e.g. PSNR-Y)")
    ap.add_argument("--label", help="label runs by this override's value (e.g. model), or 'dir' for the run "
                                    "directory's name (default: all overrides)")
    ap.add_argument("--by", default="test set", help="row key inside each run's table (default: 'test set')")
    ap.add_argument("--where", action="append", default=[], help="keep rows with KEY=VALUE / KEY!=VALUE (repeatable)")
    ap.add_argument("--out", type=Path, help="output stem (default: <first dir>/sweep_table)")
    args = ap.parse_args(argv)
    missing = [d for d in args.dirs if not d.exists()]
    if missing:
        sys.stderr.write(f"error: not found: {missing[0]}\n")
        return 2
    runs = find_runs(args.dirs)
    if not runs:
        sys.stderr.write(f"error: no results.json under {', '.join(map(str, args.dirs))}\n")
        return 2
    rows, metric_cols = collect(runs, args.label, args.by)
    try:
        for cond in args.where:
            rows = [r for r in rows if row_filter(cond)(r)]
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args.metric and args.metric not in metric_cols:
        sys.stderr.write(f"error: metric {args.metric!r} not in the results (have: {', '.join(metric_cols)})\n")
        return 2
    tables = build_tables(rows, metric_cols, args.metric, args.by)
    stem = args.out or (args.dirs[0] / "sweep_table")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(t.to_markdown() for t in tables))
    atomic_write_text(stem.with_suffix(".csv"), to_csv(tables[-1]))
    print("\n".join(t.to_markdown() for t in tables))
    print(f"written: {stem.with_suffix('.md')} and {stem.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
