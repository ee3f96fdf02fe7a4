"""LightningModule: block features from labelled pages → cost-sensitive decision tree; evaluation (Eq. 1.12–1.13,
Fig. 1.11) and per-page inference (Sec. 1.3, Table 1.1).

* fit: every ``training_step`` analyses one page (its rank's share under DDP) and keeps the candidate blocks'
  7 features with their labels; at the end of the epoch the rows of all ranks are gathered and the tree is fitted
  (identically on every rank) and stored as tensors in ``net`` together with the training rows (so an evaluation can
  refit the tree over a range of costs for the ROC). There is nothing to optimise by gradient: one epoch suffices.
* validation (after fitting, in the same epoch end): the held-out training pages (``data.val_pages``, never a test
  set) → per-defect recall, false alarms per page and ``val/errors_per_page`` (missed visible defects + false
  alarms, per page: the monitored / swept metric).
* test: per test set, the block-level confusion of the tree on the candidate blocks (miss rate, false alarm),
  the candidate stage's recall, and the per-defect evaluation of the merged page output
  (:mod:`projects.printdefect.score`: recall of visible defects by area and contrast, false alarms per page, type
  accuracy).
* infer: pages → detections json, Table 1.1 vector (json + one csv for all pages), annotated PNG.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from projects.printdefect.features import block_labels
from projects.printdefect.output import PAGE_VECTOR, annotate, detections, page_vector
from projects.printdefect.score import match_page, summarize
from projects.printdefect.score import tables as defect_tables
from projects.printdefect.tree import confusion, false_alarm, fit_tree, miss_rate
from shared.datamodule import all_ranks
from shared.errors import UserError
from shared.io import atomic_write_text, write_image
from shared.outputs import each_input, raise_failures
from shared.report import Table


class PrintDefectModule(pl.LightningModule):
    """Fits and evaluates the decision tree of ``net`` (a :class:`BlockwiseDetector`); ``cost`` is the miss cost
    C(1,0) and ``false_alarm_cost`` C(0,1) of Eq. 1.9–1.11's cost matrix; ``roc_costs`` are refitted at test time
    for Fig. 1.11; ``faint_label``: blocks of sub-threshold defects are negatives (``negative``, the chapter's
    "invisible defects") or left out of fitting and block scoring (``ignore``, as the per-defect score does);
    ``cost_grid``: fit one tree per cost and keep the one with the fewest validation errors per page (missed
    visible defects + false alarms on the held-out training pages; ``None``: ``cost`` as given);
    ``refit_with_val``: then fit the kept cost's tree again on the training *and* validation pages (the val/ metrics
    are those of the tree fitted without them)."""

    def __init__(self, net: nn.Module, cost: float = 2.0, false_alarm_cost: float = 1.0, max_depth: int | None = 8,
                 min_samples_leaf: int = 5, random_state: int = 0, label_min_fraction: float = 0.5,
                 roc_costs: list[float] | None = None, roc_plot: bool = True, faint_label: str = "negative",
                 cost_grid: list[float] | None = None, refit_with_val: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.automatic_optimization = False
        # DDP refuses to wrap a module without trainable parameters; this one is never used or updated
        self.ddp_anchor = nn.Parameter(torch.zeros(1))
        self._rows: list[tuple[str, np.ndarray, np.ndarray]] = []
        self._test: dict[int, list[dict]] = {}
        self._report: list[dict] = []
        self._defects: dict[str, dict] = {}
        self._roc: list[dict] = []

    def configure_optimizers(self):
        return None

    # ------------------------------------------------------------------------------------------------ pages
    def _page(self, batch: dict) -> tuple[dict, np.ndarray]:
        table = self.net.analyse(batch["rgb"], batch["mask"], float(batch["dpi"]))
        boxes = np.stack([table["x0"], table["y0"], table["x1"], table["y1"]], 1)
        labels = block_labels(boxes, batch.get("defects") or [], self.hparams.label_min_fraction,
                              self.hparams.faint_label)
        labels[~table["valid"]] = -1
        return table, labels

    def training_step(self, batch: dict, batch_idx: int) -> None:
        if batch.get("pad"):  # DDP padding slot: this rank has one page fewer than rank 0
            return None
        table, labels = self._page(batch)
        keep = table["candidate"] & (labels >= 0)
        x = self.net.feature_matrix({k: v[keep] for k, v in table.items()})
        self._rows.append((batch["path"], x, labels[keep]))
        return None

    def on_train_epoch_start(self) -> None:
        self._rows = []

    def on_train_epoch_end(self) -> None:
        # in page order whatever the number of ranks (the tree's tie-breaks depend on the row order)
        parts = sorted((r for rank in all_ranks(self._rows) for r in rank), key=lambda r: r[0])
        x = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, len(self.net.features)))
        y = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64)
        if len(y) == 0:
            raise UserError("no candidate blocks in the training pages: nothing to fit the decision tree on")
        hp = self.hparams
        costs = [float(c) for c in (hp.cost_grid or [hp.cost])]
        trees = {c: fit_tree(x, y, c, hp.false_alarm_cost, hp.max_depth, hp.min_samples_leaf, hp.random_state)
                 for c in costs}
        val, (xv, yv) = self._validate(trees)
        # the cost with the fewest validation errors per page (ties: the one nearest the chapter's cost)
        self.chosen_cost = min(costs, key=lambda c: (val[c]["errors_per_page"] if val else 0.0,
                                                     abs(math.log(c / hp.cost))))
        final = trees[self.chosen_cost]
        if hp.refit_with_val and len(yv):  # the chosen cost, refitted on the training and the validation pages
            x, y = np.concatenate([x, xv]), np.concatenate([y, yv])
            final = fit_tree(x, y, self.chosen_cost, hp.false_alarm_cost, hp.max_depth, hp.min_samples_leaf,
                             hp.random_state)
        self.net.tree.set_from_sklearn(final)
        self.net.tree.fit_x = torch.as_tensor(x, dtype=torch.float64, device=self.device)
        self.net.tree.fit_y = torch.as_tensor(y, dtype=torch.long, device=self.device)
        c = confusion(y, self.net.tree.predict(x))
        weighted = (c["FN"] * self.chosen_cost + c["FP"] * hp.false_alarm_cost) / len(y)
        # logged on every rank (identical values: the rows and the validation results are gathered and the seeded
        # trees are fitted everywhere): the checkpoint callback monitors a metric logged here, and a rank without it
        # would skip the collective save
        self.log_dict({"train/cost": weighted, "train/miss_rate": _nan0(miss_rate(c)),
                       "train/false_alarm": _nan0(false_alarm(c)), "train/blocks": float(len(y)),
                       "train/positives": float(y.sum()), "train/chosen_cost": self.chosen_cost}, sync_dist=False)
        if val:
            self.log_dict({f"val/{k}": v for k, v in val[self.chosen_cost].items()}, sync_dist=False)

    def _validate(self, trees: dict) -> tuple[dict[float, dict], tuple[np.ndarray, np.ndarray]]:
        """The held-out training pages (``trainer.datamodule.val_set``), each analysed once by one rank, scored for
        every candidate tree: per-defect recall, false alarms per page, errors per page (missed visible defects +
        false alarms) and the block-level miss rate / false alarm; and the pages' labelled candidate rows (page
        order). ({}, empty rows) without validation pages."""
        ds = getattr(getattr(self.trainer, "datamodule", None), "val_set", None) if self._trainer else None
        empty = (np.zeros((0, len(self.net.features))), np.zeros(0, np.int64))
        if ds is None or len(ds) == 0:
            return {}, empty
        rank, world = self.global_rank, self.trainer.world_size
        mine = []
        for i in range(rank, len(ds), world):
            batch = ds[i]
            table, labels = self._page(batch)
            keep = table["candidate"] & (labels >= 0)
            idx = np.nonzero(table["candidate"])[0]
            x = self.net.feature_matrix({k: v[idx] for k, v in table.items()})
            per_cost = {}
            for cost, clf in trees.items():
                pred = np.zeros(len(table["grid"]), np.int64)
                if len(idx):
                    pred[idx] = clf.predict(x)
                dets = detections(table, pred, float(batch["dpi"]))
                per_cost[cost] = (match_page(dets, batch.get("defects") or []), labels[keep], pred[keep])
            mine.append((i, per_cost, self.net.feature_matrix({k: v[keep] for k, v in table.items()}), labels[keep]))
        pages = sorted((p for r in all_ranks(mine) for p in r), key=lambda p: p[0])
        out = {}
        for cost in trees:
            summ = summarize([p[1][cost][0] for p in pages])
            c = confusion(np.concatenate([p[1][cost][1] for p in pages]),
                          np.concatenate([p[1][cost][2] for p in pages]))
            misses = summ["visible"] - summ["found"]
            out[cost] = {"defect_recall": _nan0(summ["recall"]),
                         "false_alarms_per_page": float(summ["false alarms/page"]),
                         "errors_per_page": (misses + summ["false alarms/page"] * summ["pages"]) / summ["pages"],
                         "type_accuracy": _nan0(summ["type accuracy"]), "miss_rate": _nan0(miss_rate(c)),
                         "false_alarm": _nan0(false_alarm(c)), "pages": float(summ["pages"])}
        return out, (np.concatenate([p[2] for p in pages]), np.concatenate([p[3] for p in pages]))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["printdefect_chosen_cost"] = float(getattr(self, "chosen_cost", self.hparams.cost))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.chosen_cost = float(checkpoint.get("printdefect_chosen_cost", self.hparams.cost))

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        """The "Blockwise Dataset" rows of one page (see :mod:`projects.printdefect.dataset`)."""
        from projects.printdefect.dataset import blockwise_rows

        table, labels = self._page(batch)
        return blockwise_rows(table, labels, batch["path"], batch.get("regions"))

    # ------------------------------------------------------------------------------------------------- test
    def on_test_epoch_start(self) -> None:
        self._test = {}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        table, labels = self._page(batch)
        pred = self.net.classify(table)
        keep = table["candidate"] & (labels >= 0)
        dets = detections(table, pred, float(batch["dpi"]))
        defects = batch.get("defects") or []
        visible = [d for d in defects if d.get("visible")]
        cboxes = np.stack([table[k][table["candidate"]] for k in ("x0", "y0", "x1", "y1")], 1)
        in_roi = sum(any(_inside(d["center"], b) for b in cboxes) for d in visible)
        self._test.setdefault(dataloader_idx, []).append({
            "path": batch["path"], "x": self.net.feature_matrix({k: v[keep] for k, v in table.items()}),
            "y": labels[keep], "pred": pred[keep], "pos": int((labels == 1).sum()),
            "cand_pos": int(((labels == 1) & table["candidate"]).sum()), "gt_visible": len(visible),
            "in_roi": in_roi, "match": match_page(dets, defects)})

    def on_test_epoch_end(self) -> None:
        names = list(getattr(self.trainer.datamodule, "test_names", []) or [])
        gathered = all_ranks(self._test)
        self._report, self._roc, self._defects = [], [], {}
        for i in sorted({k for g in gathered for k in g}):
            pages = sorted((p for g in gathered for p in g.get(i, [])), key=lambda p: p["path"])
            name = names[i] if i < len(names) else f"set{i}"
            y = np.concatenate([p["y"] for p in pages])
            pred = np.concatenate([p["pred"] for p in pages])
            c = confusion(y, pred)
            tot = {k: sum(p[k] for p in pages) for k in ("pos", "cand_pos", "gt_visible", "in_roi")}
            summ = summarize([p["match"] for p in pages])
            self._defects[name] = summ
            row = {"test set": name, "cost": float(getattr(self, "chosen_cost", self.hparams.cost)),
                   "miss rate": miss_rate(c),
                   "false alarm": false_alarm(c), **c, "pages": len(pages),
                   "candidate recall": tot["cand_pos"] / tot["pos"] if tot["pos"] else float("nan"),
                   "defects in ROI": tot["in_roi"] / tot["gt_visible"] if tot["gt_visible"] else float("nan")}
            self._report.append(row)
            for k in ("miss rate", "false alarm", "candidate recall"):
                self.log(f"test/{name}/{k.replace(' ', '_')}", _nan0(row[k]), add_dataloader_idx=False,
                         rank_zero_only=True)
            for k, key in (("recall", "defect_recall"), ("false alarms/page", "false_alarms_per_page"),
                           ("type accuracy", "type_accuracy")):
                self.log(f"test/{name}/{key}", _nan0(summ[k]), add_dataloader_idx=False, rank_zero_only=True)
            if self.hparams.roc_costs and len(self.net.tree.fit_y):
                x = np.concatenate([p["x"] for p in pages])
                self._roc += self._roc_rows(name, x, y)

    def _roc_rows(self, name: str, x: np.ndarray, y: np.ndarray) -> list[dict]:
        """Fig. 1.11: refit the tree on the stored training rows for each cost and score it on this test set."""
        hp, rows = self.hparams, []
        tx, ty = self.net.tree.fit_x.cpu().numpy(), self.net.tree.fit_y.cpu().numpy()
        for cost in hp.roc_costs:
            clf = fit_tree(tx, ty, cost, hp.false_alarm_cost, hp.max_depth, hp.min_samples_leaf, hp.random_state)
            c = confusion(y, clf.predict(x)) if len(y) else confusion([], [])
            rows.append({"test set": name, "cost": float(cost), "miss rate": miss_rate(c),
                         "false alarm": false_alarm(c)})
        return rows

    def report_tables(self, results: list[dict]) -> list[Table]:
        cols = ["test set", "cost", "miss rate", "false alarm", "TP", "FN", "FP", "TN", "pages", "candidate recall",
                "defects in ROI"]
        tables = [Table("Decision tree on candidate blocks: miss rate (Eq. 1.12) / false alarm (Eq. 1.13)", cols,
                        self._report, notes=[
                            "blocks: candidates of both grids; ambiguous blocks (part of a defect) left out",
                            "candidate recall: positive blocks that are candidates; defects in ROI: visible "
                            "ground-truth defects inside a candidate block",
                            "the dissertation: false alarm 0.088 / miss 0.266 at cost 2 on its data"])]
        if self._defects:
            tables += defect_tables(self._defects)
        if self._roc:
            note = []
            if self.hparams.roc_plot:
                out = Path(self.trainer.default_root_dir) if self.trainer else Path(".")
                chosen = float(getattr(self, "chosen_cost", self.hparams.cost))
                note = [f"plot: {p}" for p in plot_roc(self._roc, out, chosen)]
            tables.append(Table("ROC over the misclassification cost (Fig. 1.11)",
                                ["test set", "cost", "miss rate", "false alarm"], self._roc, notes=note))
        return tables

    # ------------------------------------------------------------------------------------------------ infer
    def infer(self, input: Path, output: Path, dpi: float | None = None, mask: str | None = None,
              require_mask: bool = True, annotate_png: bool = True) -> None:
        """Detect local defects on a page or a folder of pages; writes ``<stem>.json`` (detections + Table 1.1
        vector), ``<stem>_defects.png`` (annotated) and ``pages.csv`` (one Table 1.1 row per page) under
        ``output``."""
        from projects.printdefect.data import list_pages
        from projects.printdefect.page import read_page

        if not self.net.tree.fitted:
            raise UserError("the decision tree is not trained: pass ckpt_path=<a trained checkpoint>")
        pages = list_pages(input)
        if not pages:
            raise UserError(f"no pages (png/tif) found under {input}")
        if mask and str(mask) != "auto" and len(pages) > 1:
            raise UserError("infer_options.mask applies to a single page, not a folder (or mask=auto)")
        output = Path(output)
        if output.suffix and output.suffix.lower() in (".png", ".json", ".csv"):
            raise UserError(f"output must be a folder: {output}")
        rows: list[dict] = []
        stems: dict[str, Path] = {}
        for path in pages:  # one page's files must not overwrite another's
            if path.stem in stems:
                raise UserError(f"{stems[path.stem]} and {path} would both write {path.stem}.json; rename one")
            stems[path.stem] = path

        def one(path: Path) -> None:
            page = read_page(path, mask=mask, dpi=dpi, require_mask=require_mask)
            table = self.net(page.rgb, page.mask, page.dpi)
            dets = detections(table, table["pred"], page.dpi)
            h, w = page.mask.shape
            vec = page_vector(dets, w, h, page.dpi)
            rec = {"page": str(path), "width": w, "height": h, "dpi": page.dpi, "detections": dets,
                   "page_vector": vec, "candidates": int(table["candidate"].sum())}
            atomic_write_text(output / f"{path.stem}.json", json.dumps(rec, indent=1) + "\n")
            if annotate_png:
                write_image(output / f"{path.stem}_defects.png", annotate(page.rgb, dets, page.dpi))
            rows.append({"page": path.name, **vec, "error": ""})
            print(f"{path.name}: {vec['n_defects']} defects ({vec['n_gray_spots']} gray, {vec['n_solid_spots']} "
                  f"solid)")

        failures = each_input(pages, one, progress="pages", unit="page")
        rows += [{"page": path.name, "error": reason} for path, reason in failures]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["page", *PAGE_VECTOR, "error"])
        writer.writeheader()
        order = {p.name: i for i, p in enumerate(pages)}
        writer.writerows(sorted(rows, key=lambda r: order[r["page"]]))
        if len(failures) < len(pages):
            atomic_write_text(output / "pages.csv", buf.getvalue())
        raise_failures(failures, len(pages), output / "pages.csv" if len(failures) < len(pages) else None)
        print(f"results written to {output}")


def plot_roc(rows: list[dict], out: Path, chosen: float) -> list[Path]:
    """One ROC PNG per test set (detection rate 1 − miss vs false alarm), the chosen cost circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from shared.io import atomic_path

    paths = []
    for name in dict.fromkeys(r["test set"] for r in rows):
        pts = sorted((r for r in rows if r["test set"] == name and not math.isnan(r["false alarm"])
                      and not math.isnan(r["miss rate"])), key=lambda r: r["false alarm"])
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot([r["false alarm"] for r in pts], [1 - r["miss rate"] for r in pts], "o-")
        for r in pts:
            ax.annotate(f"{r['cost']:g}", (r["false alarm"], 1 - r["miss rate"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -8))
            if r["cost"] == chosen:
                ax.plot(r["false alarm"], 1 - r["miss rate"], "o", ms=16, mfc="none", mec="r")
        ax.set(xlabel="false alarm (Eq. 1.13)", ylabel="1 − miss rate (Eq. 1.12)", xlim=(0, 1), ylim=(0, 1.02),
               title=f"ROC over the cost — {name}")
        ax.grid(alpha=0.3)
        path = out / f"roc_{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def _inside(pt, box) -> bool:
    return box[0] <= pt[0] < box[2] and box[1] <= pt[1] < box[3]


def _nan0(v: float) -> float:
    return 0.0 if v != v else float(v)
