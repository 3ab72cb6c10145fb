"""mpips against the PyTorch reference (``torch_reference.py``): AUC, log-loss, samples/s.

For each model it trains mpips under ``mpiexec -n 4`` (1 scheduler, 1 server, 2 workers,
BSP) and the one-process PyTorch reference with ``--workers 2`` on the same rows with the
same settings (``examples/criteo_kaggle.toml`` plus any flags given here, passed to both
sides), then prints a Markdown table. Run it from anywhere; paths default to this
repository::

    python benchmarks/compare_torch.py                      # lr, fm, deepfm; seed 0
    python benchmarks/compare_torch.py --seeds 0,1,2 --repeats 3
    python benchmarks/compare_torch.py --mpiexec /path/mpiexec --mpips-python /venv/bin/python \\
        --torch-python /torchvenv/bin/python

Only the torch side needs PyTorch. Each run's AUC and log-loss are deterministic for a
seed (mpips' BSP sums pushes in worker order); ``--seeds`` changes the feature hashing and
both sides' initial values, so the mean over seeds shows how much of a difference is noise
of the 1,600 test rows. With ``--repeats`` each run is repeated and the best samples/s is
kept (the training clock of either side covers only its training steps). Exit status 1
when a model's mean |AUC difference| exceeds ``--tolerance``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "criteo_kaggle" / "criteo_kaggle_dev.tsv"
DEFAULT_CONFIG = REPO / "examples" / "criteo_kaggle.toml"
# Settings passed unchanged to both sides when given (flag, argparse kwargs).
SHARED = [("--epochs", int), ("--batch-size", int), ("--lr", float), ("--l2", float),
          ("--optimizer", str), ("--table-rows", int), ("--embedding-dim", int),
          ("--init-std", float), ("--hidden", str), ("--test-fraction", float)]


def default_mpiexec(python: str) -> str:
    """The mpiexec beside the mpips interpreter (pip's mpich puts it there), else PATH's."""
    beside = Path(python).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise SystemExit("no mpiexec found: give --mpiexec PATH")
    return found


def run(cmd: list[str], timeout: float) -> str:
    """Run a command from the repository root; its stdout, or exit with its output."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    try:
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"timed out after {timeout:.0f}s: {' '.join(cmd)}") from None
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout}"
                         f"{res.stderr}")
    return res.stdout


def run_mpips(args: argparse.Namespace, model: str, seed: int, shared: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="mpips-vs-torch-") as tmp:
        out = Path(tmp) / "metrics.jsonl"
        cmd = [args.mpiexec, "-n", str(2 + args.workers), args.mpips_python, "-m", "mpips",
               "train", "--config", str(args.config), "--data", str(args.data),
               "--model", model, "--seed", str(seed), "--servers", "1",
               "--metrics-out", str(out), *shared]
        run(cmd, args.timeout)
        records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    final = [r for r in records if r.get("event") == "final"]
    if not final:
        raise SystemExit(f"mpips wrote no final record: {' '.join(cmd)}")
    return final[-1]


def run_torch(args: argparse.Namespace, model: str, seed: int, shared: list[str]) -> dict:
    cmd = [args.torch_python, str(HERE / "torch_reference.py"), "--config", str(args.config),
           "--data", str(args.data), "--model", model, "--seed", str(seed),
           "--workers", str(args.workers), "--init", args.init,
           "--threads", str(args.threads), "--json", *shared]
    lines = [ln for ln in run(cmd, args.timeout).splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def best_of(runs: list[dict]) -> dict:
    """One run's metrics (they agree across repeats), with the best samples/s."""
    rec = dict(runs[0])
    rec["samples_per_s"] = max(r["samples_per_s"] for r in runs)
    rec["auc_spread"] = max(r["auc"] for r in runs) - min(r["auc"] for r in runs)
    return rec


def measure(args: argparse.Namespace, shared: list[str]) -> list[dict]:
    rows = []
    for model in args.models:
        for seed in args.seeds:
            m = best_of([run_mpips(args, model, seed, shared) for _ in range(args.repeats)])
            t = best_of([run_torch(args, model, seed, shared) for _ in range(args.repeats)])
            row = {"model": model, "seed": seed, "mpips_auc": m["auc"], "torch_auc": t["auc"],
                   "diff": m["auc"] - t["auc"], "mpips_logloss": m["logloss"],
                   "torch_logloss": t["logloss"], "mpips_samples_per_s": m["samples_per_s"],
                   "torch_samples_per_s": t["samples_per_s"],
                   "auc_spread": max(m["auc_spread"], t["auc_spread"])}
            rows.append(row)
            if not args.json:
                print(f"  {model} seed {seed}: mpips AUC {m['auc']:.4f}, torch AUC "
                      f"{t['auc']:.4f}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict], seeds: Sequence[int]) -> str:
    """The Markdown table: one line per model (means over the seeds)."""
    head = ("| model | mpips AUC | torch AUC | diff | mpips logloss | torch logloss | "
            "mpips samples/s | torch samples/s |")
    lines = [head, "|" + "---|" * 8]
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        avg = {k: mean(r[k] for r in rs) for k in rs[0] if k not in ("model", "seed")}
        lines.append(f"| {model} | {avg['mpips_auc']:.4f} | {avg['torch_auc']:.4f} | "
                     f"{avg['diff']:+.4f} | {avg['mpips_logloss']:.4f} | "
                     f"{avg['torch_logloss']:.4f} | {avg['mpips_samples_per_s']:,.0f} | "
                     f"{avg['torch_samples_per_s']:,.0f} |")
    if len(seeds) > 1:
        lines += ["", "Per seed (diff = mpips AUC - torch AUC):", "",
                  "| model | seed | mpips AUC | torch AUC | diff |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['seed']} | {r['mpips_auc']:.4f} | "
                  f"{r['torch_auc']:.4f} | {r['diff']:+.4f} |" for r in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="mpips (mpiexec, 1 server, N workers, BSP) "
                                "against the one-process PyTorch reference.")
    p.add_argument("--mpiexec", metavar="PATH", help="mpiexec for mpips (default: the one "
                   "beside --mpips-python, else mpiexec on PATH)")
    p.add_argument("--mpips-python", metavar="PATH", default=sys.executable,
                   help="Python with mpips, mpi4py and numba (default: this one)")
    p.add_argument("--torch-python", metavar="PATH", default=sys.executable,
                   help="Python with mpips and torch (default: this one)")
    p.add_argument("--data", metavar="PATH", type=Path, default=DEFAULT_DATA,
                   help="Criteo TSV (default ../shared/data/criteo_kaggle/"
                   "criteo_kaggle_dev.tsv from the repository root)")
    p.add_argument("--config", metavar="FILE.toml", type=Path, default=DEFAULT_CONFIG,
                   help="settings for both sides (default examples/criteo_kaggle.toml)")
    p.add_argument("--models", default="lr,fm,deepfm", type=lambda s: s.split(","),
                   help="comma-separated (default lr,fm,deepfm)")
    p.add_argument("--seeds", default=[0], type=lambda s: [int(x) for x in s.split(",")],
                   help="comma-separated seeds; the table shows means (default 0)")
    p.add_argument("--workers", type=int, default=2, help="mpips workers, and the torch "
                   "reference's --workers (default 2)")
    p.add_argument("--repeats", type=int, default=1, help="runs per side, model and seed; "
                   "the best samples/s is kept (default 1)")
    p.add_argument("--init", choices=("torch", "mpips"), default="torch",
                   help="the reference's initial values (default torch: same distributions)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--tolerance", type=float, default=0.005, help="largest mean |AUC "
                   "difference| that passes (default 0.005)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per run (default 600)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    for flag, kind in SHARED:
        p.add_argument(flag, type=kind, help="passed to both sides")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.mpiexec = args.mpiexec or default_mpiexec(args.mpips_python)
    args.data = args.data.resolve()
    args.config = args.config.resolve()
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: no such file (give --data PATH)")
    shared = []
    for flag, _ in SHARED:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            shared += [flag, str(value)]
    rows = measure(args, shared)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(rows, args.seeds))
    worst = {m: abs(mean(r["diff"] for r in rows if r["model"] == m)) for m in args.models}
    failed = [m for m, d in worst.items() if d > args.tolerance]
    if not args.json:
        print(f"\n{'FAIL' if failed else 'ok'}: mean |AUC diff| " +
              ", ".join(f"{m} {d:.4f}" for m, d in worst.items()) +
              f" (tolerance {args.tolerance})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
