"""The grid behind mpips' defaults: the PyTorch reference (``torch_reference.py``, the
same algorithm as mpips, validation and early stopping included) over learning rate x L2
x min-count on several data sets, early-stopped on the same validation rows as mpips.

    python benchmarks/tune_defaults.py --out grid.jsonl --models fm \\
        --data kaggle=../shared/data/criteo_kaggle/criteo_kaggle_dev.tsv \\
        --data kaggle_csv=kaggle.csv@kaggle_csv.toml --data synthetic=builtin:100000
    python benchmarks/tune_defaults.py --summary grid.jsonl

Each record is one run (data set, model, grid point, test AUC). ``--summary`` prints, per
model, every grid point's AUC shortfall against the best point of each data set, and the
point with the smallest worst shortfall over the data sets: the candidate default.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch_reference  # noqa: E402


def data_args(spec: str) -> tuple[str, list[str]]:
    """``NAME=PATH[@CONFIG]`` or ``NAME=builtin:ROWS`` -> (name, reference flags)."""
    name, where = spec.split("=", 1)
    if where.startswith("builtin:"):
        return name, ["--synthetic-rows", where.split(":", 1)[1]]
    path, _, config = where.partition("@")
    return name, ["--data", path] + (["--config", config] if config else [])


def grid(args: argparse.Namespace) -> None:
    points = list(itertools.product(args.models, args.lr, args.l2, args.min_count))
    with open(args.out, "a", encoding="utf-8") as out:
        for spec in args.data:
            name, flags = data_args(spec)
            for i, (model, lr, l2, mc) in enumerate(points):
                argv = [*flags, "--model", model, "--lr", str(lr), "--l2", str(l2),
                        "--min-count", str(mc), "--init", "mpips", "--threads", "1",
                        *args.fixed.split()]
                rec = torch_reference.run(torch_reference.build_parser().parse_args(argv))
                rec.update(data=name, argv=argv)
                out.write(json.dumps(rec) + "\n")
                out.flush()
                print(f"[grid] {name} {i + 1}/{len(points)} {model} lr {lr} l2 {l2} "
                      f"min-count {mc}: AUC {rec['auc']:.4f} (val {rec.get('val_auc', 0):.4f}, "
                      f"best step {rec.get('best_step')})", flush=True)


def summary(path: str) -> None:
    recs = [json.loads(line) for line in open(path, encoding="utf-8")]
    by = defaultdict(dict)                 # (model, point) -> data -> auc
    best = defaultdict(float)              # (model, data) -> best auc
    for r in recs:
        point = (r["lr"], r["l2"], r["min_count"])
        by[r["model"], point][r["data"]] = r["auc"]
        best[r["model"], r["data"]] = max(best[r["model"], r["data"]], r["auc"])
    datasets = sorted({r["data"] for r in recs})
    for model in sorted({r["model"] for r in recs}):
        print(f"\n{model}: best test AUC per data set: "
              + ", ".join(f"{d} {best[model, d]:.4f}" for d in datasets))
        rows = []
        for (m, point), aucs in by.items():
            if m != model or len(aucs) < len(datasets):
                continue
            short = [best[model, d] - aucs[d] for d in datasets]
            rows.append((max(short), sum(short) / len(short), point, [aucs[d] for d in datasets]))
        rows.sort()
        print("  lr      l2       min-count  worst-shortfall  mean-shortfall  "
              + "  ".join(datasets))
        for worst, mean, (lr, l2, mc), aucs in rows[:12]:
            print(f"  {lr:<7} {l2:<8} {mc:<10} {worst:.4f}           {mean:.4f}          "
                  + "  ".join(f"{a:.4f}" for a in aucs))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="append one JSON record a run")
    p.add_argument("--summary", metavar="GRID.jsonl", help="summarise a grid's records")
    p.add_argument("--data", action="append", default=[], help="NAME=PATH[@CONFIG.toml] or "
                   "NAME=builtin:ROWS (repeatable)")
    p.add_argument("--models", nargs="+", default=["lr", "fm", "deepfm"])
    p.add_argument("--lr", nargs="+", type=float, default=[0.02, 0.05, 0.1, 0.2])
    p.add_argument("--l2", nargs="+", type=float, default=[0.0, 1e-4, 1e-3])
    p.add_argument("--min-count", nargs="+", type=int, default=[0, 2, 5])
    p.add_argument("--fixed", default="", help="flags every run gets, e.g. "
                   "'--val-fraction 0.1 --early-stop 2 --epochs 10'")
    args = p.parse_args()
    if args.summary:
        summary(args.summary)
    else:
        grid(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
