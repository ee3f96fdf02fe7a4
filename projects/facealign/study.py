"""The chapter's tables and figures across the runs of one sweep, written at the end of every facealign multirun (a
Hydra callback registered in ``conf/facealign/train.yaml``) or on demand:

    python -m projects.facealign.study logs/facealign/<name>/multiruns/<time> [--out DIR]

From each run's ``.hydra/config.yaml``, ``final_metrics.json`` (the test metrics) and ``stability.npz``:

* **Table 3.2 / 3.4 layout** — NME (%) on the 300-VW subsets 1–3, one row per run (its ``model.method`` and
  ``model.training_data``), one table per protocol (ground-truth box / detector box), plus "+ flow fusion" rows;
* **Table 3.3 layout** — NME (%) on 300-W common / challenging / full, one row per run;
* **Table 3.1 study** — when the runs differ in annotation-noise type or loss: NME (%) on 300-W full (or the first
  300-W set) per noise type × loss, with the loss Table 3.1 pairs with each noise type;
* **Fig. 3.10** — per-landmark SDD (X top, Y bottom), one bar per run, for each video test set and pooled over the
  300-VW categories of each protocol (``fig3_10_<set>.png``, ``fig3_10_300vw_<protocol>.png``);
* **Fig. 3.9** — validation NME over training steps, one curve per run (``fig3_9.png``).

Written as ``study.md`` / ``study.json`` and PNGs in the sweep directory (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import UserError, report
from shared.report import Table, write_report

log = logging.getLogger(__name__)
CATEGORY = re.compile(r"(?:cat|category|subset)[-_ ]?([123])([-_ ]detected)?$")


@dataclass
class Run:
    """One run directory of a sweep."""

    path: Path
    method: str
    training_data: str
    noise_type: str
    noise_level: float
    loss: str
    metrics: dict = field(default_factory=dict)
    stability: Path | None = None

    @property
    def label(self) -> str:
        return self.method

    def get(self, test_set: str, key: str) -> float | None:
        v = self.metrics.get(f"test/{test_set}/{key}")
        return None if v is None else float(v)


def load_runs(sweep: Path) -> list[Run]:
    """Every finished run under ``sweep`` (a run directory itself, or a folder of them), in job order."""
    from omegaconf import OmegaConf

    from shared.sweep_table import find_runs

    runs = []
    for d in find_runs([Path(sweep)]):
        cfg_file, fm = d / ".hydra" / "config.yaml", d / "final_metrics.json"
        if not cfg_file.is_file() or not fm.is_file():
            continue
        cfg = OmegaConf.load(cfg_file)
        model, data = cfg.get("model", {}), cfg.get("data", {})
        noise_type = str(data.get("noise_type", "gaussian"))
        level = float(data.get("noise_sigma", 0.0) if noise_type in ("gaussian", "poisson")
                      else data.get("noise_prob", 0.0))
        runs.append(Run(d, str(model.get("method", d.name)), str(model.get("training_data", "300-W")),
                        noise_type if level > 0 else "none", level, str(model.get("loss", "l2")),
                        json.loads(fm.read_text()).get("metrics", {}),
                        d / "stability.npz" if (d / "stability.npz").is_file() else None))
    if not runs:
        raise UserError(f"no finished facealign runs (.hydra/config.yaml + final_metrics.json) under {sweep}")
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):  # runs that share a method name are told apart by what differs
        for r in runs:
            r.method = f"{r.method} ({r.noise_type}, {r.loss})" if r.noise_type != "none" else f"{r.method} ({r.loss})"
    return runs


def _test_sets(runs: list[Run]) -> list[str]:
    names: list[str] = []
    for r in runs:
        for k in r.metrics:
            if k.startswith("test/") and k.endswith("/nme"):
                name = k[len("test/"):-len("/nme")]
                if name not in names:
                    names.append(name)
    return names


def _pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def vw_tables(runs: list[Run]) -> list[Table]:
    """Table 3.2 (and Table 3.4) layout per protocol."""
    tables = []
    names = _test_sets(runs)
    for detected, protocol in ((False, "ground-truth box"), (True, "detector box")):
        subsets = {int(m.group(1)): n for n in names
                   if (m := CATEGORY.search(n.lower())) and bool(m.group(2)) == detected}
        if not subsets:
            continue
        rows = []
        for fused in (False, True):
            for r in runs:
                key = "nme_fused" if fused else "nme"
                cells = {f"Subset-{k}": _pct(r.get(subsets[k], key)) if k in subsets else None for k in (1, 2, 3)}
                if all(v is None for v in cells.values()):
                    continue
                rows.append({"Method": r.method + (" + flow fusion" if fused else ""),
                             "Training Set": r.training_data, **cells})
        notes = ["faces cropped from " + ("their ground-truth landmark box" if not detected else
                                          "the MTCNN detection of each frame, then from the prediction (as infer)"),
                 "sets: " + ", ".join(f"Subset-{k} = {v}" for k, v in sorted(subsets.items()))]
        tables.append(Table(f"Table 3.2 / 3.4 layout: NME (%) on 300-VW, {protocol}",
                            ["Method", "Training Set", "Subset-1", "Subset-2", "Subset-3"], rows, notes))
    return tables


def w300_table(runs: list[Run]) -> list[Table]:
    names = set(_test_sets(runs))
    cols = {"Common": "common", "Challenging": "challenging", "Full Set": "full"}
    if not names & set(cols.values()):
        return []
    rows = [{"Method": r.method, "Training Data": r.training_data,
             **{c: _pct(r.get(n, "nme")) for c, n in cols.items()}} for r in runs]
    return [Table("Table 3.3 layout: NME (%) on 300-W (ground-truth box)",
                  ["Method", "Training Data", *cols], rows)]


def noise_table(runs: list[Run]) -> list[Table]:
    """Table 3.1 study: NME per (noise type, loss) on 300-W."""
    from projects.facealign.model import TABLE_3_1

    if len({r.noise_type for r in runs}) < 2 and len({r.loss for r in runs}) < 2:
        return []
    names = _test_sets(runs)
    target = next((n for n in ("full", "common", "challenging") if n in names), names[0] if names else None)
    if target is None:
        return []
    losses = sorted({r.loss for r in runs})
    rows = []
    for noise in dict.fromkeys(r.noise_type for r in runs):
        row = {"Noise Type": noise, "Table 3.1 loss": TABLE_3_1.get(noise, "l2" if noise == "none" else "–")}
        for loss in losses:
            vals = [r.get(target, "nme") for r in runs if r.noise_type == noise and r.loss == loss]
            row[loss] = _pct(vals[0]) if vals and vals[0] is not None else None
        rows.append(row)
    return [Table(f"Table 3.1 study: NME (%) on 300-W {target} per annotation-noise type × training loss",
                  ["Noise Type", "Table 3.1 loss", *losses], rows,
                  ["the loss Table 3.1 pairs with a noise type should give that row's lowest NME"])]


def sdd_figures(runs: list[Run], out: Path) -> list[Path]:
    """Fig. 3.10 per video test set and pooled over the 300-VW categories of each protocol."""
    from projects.facealign.metrics import plot_sdd_bars

    per_run: dict[str, dict[str, np.ndarray]] = {}
    for r in runs:
        if r.stability is None:
            continue
        with np.load(r.stability) as z:
            per_run[r.label] = {k: z[k] for k in z.files if k.endswith("/sdd") or k.endswith("/sdd_videos")}
    if not per_run:
        return []
    written = []
    sets = sorted({k.rsplit("/", 1)[0] for arrays in per_run.values() for k in arrays if k.endswith("/sdd")})
    for s in sets:
        bars = {label: a[f"{s}/sdd"] for label, a in per_run.items() if f"{s}/sdd" in a}
        written.append(plot_sdd_bars(bars, out / f"fig3_10_{s}.png"))
    for detected, tag in ((False, "gt_box"), (True, "detector_box")):
        bars = {}
        for label, a in per_run.items():
            vids = [a[k] for k in sorted(a) if k.endswith("/sdd_videos")
                    and (m := CATEGORY.search(k.rsplit("/", 1)[0].lower())) and bool(m.group(2)) == detected]
            if vids:
                bars[label] = np.concatenate(vids).mean(0)
        if bars:
            written.append(plot_sdd_bars(bars, out / f"fig3_10_300vw_{tag}.png"))
    return written


def training_curves(runs: list[Run], out: Path) -> Path | None:
    """Fig. 3.9: validation NME over training steps, one curve per run."""
    import csv

    from projects.facealign.plot_sweep import plot

    data = {}
    for r in runs:
        files = sorted(r.path.glob("csv/**/metrics.csv")) or sorted(r.path.glob("**/metrics.csv"))
        if not files:
            continue
        with files[-1].open() as fh:
            pts = [(int(float(row.get("step") or 0)), float(row["val/nme"])) for row in csv.DictReader(fh)
                   if row.get("val/nme") not in (None, "")]
        if pts:
            data[r.label] = sorted(pts)
    return plot(data, out / "fig3_9.png", "val/nme") if data else None


def write_study(sweep: Path, out: Path | None = None) -> tuple[list[Table], list[Path]]:
    """Every table and figure the runs under ``sweep`` allow; written under ``out`` (default: ``sweep``)."""
    sweep = Path(sweep)
    out = Path(out) if out else sweep
    runs = load_runs(sweep)
    tables = [Table("Runs", ["run", "Method", "Training Data", "noise", "level", "loss"],
                    [{"run": r.path.name, "Method": r.method, "Training Data": r.training_data, "noise": r.noise_type,
                      "level": r.noise_level, "loss": r.loss} for r in runs])]
    tables += vw_tables(runs) + w300_table(runs) + noise_table(runs)
    figures = sdd_figures(runs, out)
    curve = training_curves(runs, out)
    if curve is not None:
        figures.append(curve)
    write_report(tables, out, "study")
    return tables, figures


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object


class StudyCallback(Callback):
    """Writes :func:`write_study` into the sweep directory at the end of a multirun (a failure is a warning: the
    sweep's own results stay)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            tables, figures = write_study(sweep)
        except Exception as exc:  # noqa: BLE001 - a summary must never fail the sweep that produced the runs
            log.warning("facealign study tables not written: %s", exc)
            return
        print("\n".join(t.to_markdown() for t in tables))
        print(f"study written to {sweep / 'study.md'}" + (f" (+ {len(figures)} figures)" if figures else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m projects.facealign.study", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        tables, figures = write_study(args.sweep, args.out)
    except UserError as exc:
        return report(exc)
    print("\n".join(t.to_markdown() for t in tables))
    print(f"study written to {(args.out or args.sweep) / 'study.md'}" + "".join(f"\n  {f}" for f in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
