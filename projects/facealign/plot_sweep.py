"""Figures from several runs.

Fig. 3.9 from a sweep: validation NME over training steps, one curve per job (e.g. per annotation-noise level):

    python -m projects.facealign.plot_sweep logs/facealign/noise_sweep/multiruns/<time> [--label data.noise_sigma]
        [--metric val/nme] [--out fig3_9.png]

reads each job's ``csv/metrics.csv`` (the CSV logger) and ``.hydra/overrides.yaml``; writes the PNG and prints a
markdown table of the last value per job.

Fig. 3.10 from evaluation runs of several models (each wrote ``stability.npz``):

    python -m projects.facealign.plot_sweep --sdd pseudo corrected=RUN_A noise=RUN_B aug=RUN_C [--out fig3_10.png]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from shared.errors import UserError, report
from shared.sweep_table import find_runs, overrides


def curves(sweep: Path, metric: str, label: str | None) -> dict[str, list[tuple[int, float]]]:
    """{job label: [(step, value), …]} from every run under ``sweep``."""
    runs = find_runs([sweep])
    if not runs:
        raise UserError(f"no runs (final_metrics.json / results.json) under {sweep}")
    out: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        files = sorted(run.glob("csv/**/metrics.csv")) or sorted(run.glob("**/metrics.csv"))
        if not files:
            raise UserError(f"{run}: no csv/metrics.csv (train with logger=csv)")
        ov = overrides(run)
        name = f"{label}={ov.get(label, '?')}" if label else (" ".join(f"{k}={v}" for k, v in ov.items()) or run.name)
        pts = []
        with files[-1].open() as fh:
            for row in csv.DictReader(fh):
                if row.get(metric) not in (None, ""):
                    pts.append((int(float(row.get("step") or 0)), float(row[metric])))
        out[name] = sorted(pts)
    return out


def plot(data: dict[str, list[tuple[int, float]]], path: Path, metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from shared.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in data.items():
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3, label=name)
    ax.set(xlabel="training step", ylabel=metric, title="Fig. 3.9: NME vs training for each noise level")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def sdd_figure(test_set: str, runs: list[str], out: Path) -> tuple[Path, dict[str, float]]:
    """Fig. 3.10: per-landmark SDD of ``test_set`` for runs given as ``label=RUN_DIR`` (or RUN_DIR)."""
    import numpy as np

    from projects.facealign.metrics import plot_sdd_bars

    sdds = {}
    for spec in runs:
        label, _, path = spec.rpartition("=") if "=" in spec else (Path(spec).name, "", spec)
        f = Path(path) / "stability.npz"
        if not f.is_file():
            raise UserError(f"no stability.npz in {path} (evaluate the model with a video test set first)")
        with np.load(f) as z:
            if f"{test_set}/sdd" not in z:
                raise UserError(f"{f} has no SDD for test set {test_set!r} (has: {sorted(z.files)})")
            sdds[label] = z[f"{test_set}/sdd"]
    return plot_sdd_bars(sdds, out), {k: float(v.mean()) for k, v in sdds.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", nargs="+", help="a sweep directory, or with --sdd: label=RUN_DIR …")
    ap.add_argument("--sdd", metavar="TEST_SET", default=None, help="Fig. 3.10 for this test set")
    ap.add_argument("--metric", default="val/nme")
    ap.add_argument("--label", default="data.noise_sigma")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        if args.sdd:
            out, means = sdd_figure(args.sdd, args.sweep, args.out or Path("fig3_10.png"))
            print("| model | mean SDD |\n|---|---|\n" + "\n".join(f"| {k} | {v:.5f} |" for k, v in means.items()))
            print(f"plot written to {out}")
            return 0
        sweep = Path(args.sweep[0])
        data = curves(sweep, args.metric, args.label)
    except UserError as exc:
        return report(exc)
    out = plot(data, args.out or sweep / "fig3_9.png", args.metric)
    print(f"| job | last {args.metric} | points |\n|---|---|---|")
    for name, pts in data.items():
        print(f"| {name} | {pts[-1][1]:.5f} | {len(pts)} |" if pts else f"| {name} | – | 0 |")
    print(f"plot written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
