"""Predict throughput in one process against training, in one run: LR and DeepFM are
trained under mpiexec (1 scheduler, 1 server, 2 workers) on prepared shards, exported,
then scored in one process by ``mpips predict`` from the shards and from the text, and
by ``Model.predict_batch`` on batches already in memory (the scoring alone).

    python benchmarks/predict_throughput.py [--rows 400000] [--json]

Data: as ``data_throughput.py`` (the Kaggle sample tiled to --rows, else generated
Criteo-shaped lines), in a temporary folder removed at the end. Predict rates count
the rows scored over the time from the first batch read to the last scored (the
model's loading and the data's opening are not in them).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = "1"          # one thread, as every mpips rank and command has

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from data_throughput import make_text, mpips  # noqa: E402

from mpips.export import Model  # noqa: E402
from mpips.predict import Cut, read_cut  # noqa: E402


def train(model: str, data: Path, tmp: Path, run: str) -> float:
    """Train ``model`` for one epoch with a final checkpoint; its samples/s."""
    metrics = tmp / f"{run}.jsonl"
    mpips(4, "train", "--model", model, "--data", str(data), "--epochs", "1",
          "--checkpoint-every", "1000000000", "--checkpoint-dir", str(tmp / "ck"),
          "--run-name", run, "--metrics-out", str(metrics))
    return json.loads(metrics.read_text().splitlines()[-1])["samples_per_s"]


def one_process(*args: str) -> None:
    """``mpips ARGS`` without mpiexec."""
    r = subprocess.run([sys.executable, "-m", "mpips", *args], capture_output=True,
                       text=True, timeout=900)
    if r.returncode:
        raise SystemExit(r.stderr)


def predict_rate(model: Path, data: Path, tmp: Path) -> float:
    """``mpips predict MODEL --data DATA`` in one process: its rows/s."""
    record = tmp / "p.json"
    one_process("predict", str(model), "--data", str(data), "--out", str(tmp / "p.npy"),
                "--metrics-out", str(record))
    return json.loads(record.read_text())["rows_per_s"]


def scoring_rate(model: Path, data: Path, rows: int) -> float:
    """``Model.predict_batch`` over the rows' batches, read into memory beforehand."""
    m = Model.load(model)
    source = m.inputs.source(data)[0]
    cut = Cut(0, min(rows, source.rows), m.workers, 8192)
    batches = list(read_cut(source, cut, cut.batches()))
    m.predict_batch(batches[0])                      # the kernels, loaded once
    t0 = time.perf_counter()
    n = sum(m.predict_batch(b).size for b in batches)
    return n / (time.perf_counter() - t0)


def measure(model: str, tmp: Path, text: Path, rows: int, run: str) -> dict[str, float]:
    """One round: train, export, then the three predict rates."""
    rate = train(model, tmp / "prep", tmp, run)
    h5 = tmp / f"{run}.h5"
    one_process("export", str(tmp / "ck" / run), "--out", str(h5))
    return {"train_samples_per_s": rate,
            "predict_shards_rows_per_s": predict_rate(h5, tmp / "prep", tmp),
            "predict_text_rows_per_s": predict_rate(h5, text, tmp),
            "scoring_rows_per_s": scoring_rate(h5, tmp / "prep", rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--repeats", type=int, default=3, help="rounds, interleaved; the "
                    "best of each figure is kept (noise on a shared machine only slows)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {"rows": args.rows, "cores": os.cpu_count(), "repeats": args.repeats,
           "models": {}}
    with tempfile.TemporaryDirectory(prefix="mpips-predict-") as name:
        tmp = Path(name)
        text = tmp / "all.tsv"
        out["data"] = make_text(text, args.rows)
        mpips(2, "prep", str(text), "--out", str(tmp / "prep"))
        rounds: dict[str, list[dict[str, float]]] = {"lr": [], "deepfm": []}
        for r in range(args.repeats):
            for model in rounds:
                rounds[model].append(measure(model, tmp, text, args.rows, f"{model}-{r}"))
        for model, got in rounds.items():
            best = {k: max(g[k] for g in got) for k in got[0]}
            for key in ("predict_shards", "predict_text", "scoring"):
                best[f"{key}_vs_train"] = best[f"{key}_rows_per_s"] / best["train_samples_per_s"]
            out["models"][model] = best
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{args.rows:,} rows ({out['data']}), {out['cores']} cores, best of "
          f"{args.repeats}; training: mpiexec -n 4 (1 server, 2 workers), 1 epoch; predict: "
          f"one process")
    print("| model | training samples/s | predict from shards rows/s | predict from text "
          "rows/s | scoring only rows/s |")
    print("|---|---|---|---|---|")
    for model, g in out["models"].items():
        cells = [f"{g['train_samples_per_s']:,.0f}"] + [
            f"{g[k + '_rows_per_s']:,.0f} ({g[k + '_vs_train']:.2f}x)"
            for k in ("predict_shards", "predict_text", "scoring")]
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
