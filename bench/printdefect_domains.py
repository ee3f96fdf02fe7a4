"""Print defects (issue 19): the held-out-domain protocol and the README recipe, as a user runs them.

    python bench/printdefect_domains.py [--data data/printdefect_domains] [--train 15] [--test 10] [--logs logs]

1. simulates (once; existing folders are kept) 600-dpi A4 pages: domain "a" (training + in-domain test), domain
   "b" (cross-domain test: other screens, rulings, dot gain, scanner, colours) and domain "wide" (the README
   recipe's training pages), timing the simulator per page;
2. runs ``python -m projects.printdefect.train +experiment=cross_domain`` with the detector of issue 19
   (model=blockwise) and with the chapter's (model=chapter): fit on "a" (less the validation pages), test on
   a / b;
3. runs the README recipe: fit on "wide", test on a / b;
4. prints the per-defect tables of each run side by side (the runs' results.md hold all tables).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def simulate(folder: Path, pages: int, domain: str, seed: int) -> float | None:
    """Pages of ``domain`` into ``folder`` (skipped when it already holds them); seconds per page or None."""
    if folder.is_dir() and len(list(folder.glob("*.json"))) >= pages:
        return None
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "projects.printdefect.simulate", f"out={folder}", f"pages={pages}",
                    "size=a4", f"domain={domain}", f"seed={seed}"], check=True, cwd=ROOT)
    return (time.perf_counter() - t) / pages


def train(name: str, args: list[str], logs: Path) -> Path:
    env = {**os.environ, "LOG_DIR": str(logs)}
    run_dir = logs / "printdefect" / "bench" / f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "projects.printdefect.train", *args, f"hydra.run.dir={run_dir}",
                    "callbacks.rich_progress_bar=null", "logger=csv"], check=True, cwd=ROOT, env=env)
    print(f"{name}: {time.perf_counter() - t:.0f} s")
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "printdefect_domains")
    ap.add_argument("--logs", type=Path, default=ROOT / "logs")
    ap.add_argument("--train", type=int, default=15)
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--skip", nargs="*", default=[], help="runs to skip: ours chapter recipe")
    args = ap.parse_args()
    data = args.data.resolve()
    sets = {"a_train": ("a", args.train, 20), "a_test": ("a", args.test, 21), "b_test": ("b", args.test, 22),
            "wide_train": ("wide", args.train, 23)}
    for name, (domain, n, seed) in sets.items():
        per_page = simulate(data / name, n, domain, seed)
        if per_page is not None:
            print(f"simulated {n} A4 600-dpi pages of domain {domain} into {data / name}: {per_page:.2f} s per page "
                  "(including the PNG and json writes)")
    base = ["+experiment=cross_domain", f"data.train_dir={data / 'a_train'}",
            f"data.test_sets.in_domain={data / 'a_test'}", f"data.test_sets.cross_domain={data / 'b_test'}"]
    runs = {"ours": base, "chapter": [*base, "model=chapter"],
            "recipe": [*base, f"data.train_dir={data / 'wide_train'}", "name=recipe"]}
    done = {}
    for name, extra in runs.items():
        if name in args.skip:
            continue
        done[name] = train(name, extra, args.logs)
    for name, run_dir in done.items():
        tables = json.loads((run_dir / "results.json").read_text())
        print(f"\n## {name} ({run_dir})\n")
        for t in tables:
            if t["title"].startswith(("Per-defect", "Decision tree")):
                cols = t["columns"]
                print(f"### {t['title']}\n\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
                for r in t["rows"]:
                    print("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
                print()
        metrics = json.loads((run_dir / "final_metrics.json").read_text())["metrics"]
        print("validation:", {k: round(v, 3) for k, v in metrics.items() if k.startswith("val/")})


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "–" if v is None else str(v)


if __name__ == "__main__":
    main()
