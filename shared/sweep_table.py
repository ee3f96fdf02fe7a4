"""Collect the results of many runs (a ``--multirun`` sweep or any run directories) into one table.

    python -m shared.sweep_table logs/zsm/vimeo/multiruns/<time>                  # every job of a sweep
    python -m shared.sweep_table RUN_DIR [RUN_DIR …] --metric PSNR-Y --label model # paper layout: sets × runs
    python -m shared.sweep_table DIR --by QF --where 'Method!=Bicubic' --metric 'Set5 PSNR' --label model

Each run directory holds ``.hydra/overrides.yaml`` and what the driver wrote: ``final_metrics.json`` (the optimised
metric and the last logged scalars) and, when the run was tested, ``results.json``. Tables:

* **Jobs**: one row per job — the overrides that differ between jobs, one column each, then the optimised metric
  and the validation metrics — sorted best first (by the optimised metric and its mode, or ``--sort KEY``);
  written as ``sweep_table_jobs.csv``;
* **Runs × test sets**: one row per (run, test set) with every metric of the run's results table;
* with ``--metric``: test sets in rows, runs in columns — the layout of the dissertation's ablation tables.

Written as markdown (all tables, ``sweep_table.md``) + CSV (the last table, ``sweep_table.csv``) in the first
directory given (or ``--out``), and printed. Runs are labelled by their differing overrides (``--label``: one
override's value, or ``dir``).
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


def _is_run(d: Path) -> bool:
    return (d / "results.json").is_file() or (d / "final_metrics.json").is_file()


def find_runs(paths: list[Path]) -> list[Path]:
    runs: list[Path] = []
    for p in paths:
        if _is_run(p):
            runs.append(p)
        elif p.is_dir():
            runs += sorted((d for d in p.iterdir() if _is_run(d)),
                           key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    return runs


def overrides(run: Path) -> dict[str, str]:
    """The run's command-line overrides as {key: value} (``+``/``~`` prefixes dropped)."""
    ov_file = run / ".hydra" / "overrides.yaml"
    items = (yaml.safe_load(ov_file.read_text()) if ov_file.is_file() else None) or []
    return {k: v for k, _, v in (ov.lstrip("+~").partition("=") for ov in items)}


def varying_keys(runs: list[Path]) -> list[str]:
    """Override keys whose value differs between runs (or that only some runs set), in first-seen order."""
    all_ov = [overrides(r) for r in runs]
    keys = list(dict.fromkeys(k for ov in all_ov for k in ov))
    return [k for k in keys if len({ov.get(k) for ov in all_ov}) > 1]


def run_label(run: Path, key: str | None, varying: list[str] | None = None) -> str:
    if key == "dir":
        return run.name
    ov = overrides(run)
    if key:
        return ov.get(key, run.name)
    shown = [f"{k}={ov[k]}" for k in (varying if varying else ov) if k in ov]
    return " ".join(shown) or run.name


def final_metrics(run: Path) -> dict:
    f = run / "final_metrics.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def jobs_table(runs: list[Path], sort: str | None = None) -> Table:
    """One row per job: differing overrides, the optimised metric and the validation metrics, best first."""
    keys = varying_keys(runs)
    records = [(r, final_metrics(r)) for r in runs]
    opt = next((fm["optimized_metric"] for _, fm in records if fm.get("optimized_metric")), None)
    mode = next((fm.get("mode") for _, fm in records if fm.get("mode")), None)
    metric_cols = list(dict.fromkeys(k for _, fm in records for k in fm.get("metrics", {})
                                     if k.startswith("val/") and k != opt))
    rows = []
    for run, fm in records:
        ov = overrides(run)
        row = {"job": run.name, **{k: ov.get(k) for k in keys}, **fm.get("metrics", {})}
        if opt:
            row[opt] = fm.get("value", row.get(opt))
        rows.append(row)
    key = sort or opt
    if key:
        present = [r for r in rows if isinstance(r.get(key), int | float) and r[key] == r[key]]  # drop None/NaN
        missing = [r for r in rows if r not in present]
        descending = mode == "max" if key == opt else False
        rows = sorted(present, key=lambda r: r[key], reverse=descending) + missing
    best = f"; best first by {key}" + (f" ({mode})" if key == opt and mode else "") if key else ""
    cols = ["job", *keys, *([opt] if opt else []), *metric_cols]
    if sort and sort not in cols:
        cols.append(sort)
    return Table(f"Jobs ({len(rows)}){best}", cols, rows)


def collect(runs: list[Path], label_key: str | None = None, by: str = "test set") -> tuple[list[dict], list[str]]:
    rows, metric_cols = [], []
    varying = varying_keys(runs)
    for run in runs:
        if not (run / "results.json").is_file():
            continue
        tables = json.loads((run / "results.json").read_text())
        if not tables:
            continue
        first = tables[0]
        for r in first["rows"]:
            row = {"run": run_label(run, label_key, varying), by: r.get(by, r.get(first["columns"][0])), **r}
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
    tables = [Table("Runs × test sets", ["run", by, *metric_cols], rows)] if rows else []
    if metric and rows:
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
                                    "directory's name (default: the overrides that differ between runs)")
    ap.add_argument("--sort", help="sort the jobs table by this column (default: the optimised metric, best first)")
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
        sys.stderr.write(f"error: no results.json or final_metrics.json under {', '.join(map(str, args.dirs))}\n")
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
    jobs = jobs_table(runs, args.sort)
    tables = [jobs, *build_tables(rows, metric_cols, args.metric, args.by)]
    stem = args.out or (args.dirs[0] / "sweep_table")
    atomic_write_text(stem.with_suffix(".md"), "\n".join(t.to_markdown() for t in tables))
    atomic_write_text(stem.with_suffix(".csv"), to_csv(tables[-1]))
    atomic_write_text(stem.with_name(stem.name + "_jobs.csv"), to_csv(jobs))
    print("\n".join(t.to_markdown() for t in tables))
    print(f"written: {stem.with_suffix('.md')} and {stem.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
