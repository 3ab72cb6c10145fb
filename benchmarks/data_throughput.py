"""Data throughput in one run: ``mpips prep`` rows/s with 1 and 2 ranks, one process
reading its share of the shards (in order and in a shuffled batch order, for each HDF5
compression), the text reader, and LR and DeepFM training samples/s on the same data.

    python benchmarks/data_throughput.py [--rows 400000] [--json]

Data: the Kaggle sample in ../shared/data tiled to --rows when present, else generated
Criteo-shaped lines; everything goes to a temporary folder that is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

from mpips.config import TrainConfig
from mpips.data import epoch_order, n_batches, share, shuffle_block
from mpips.data.plan import plan_data

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
KAGGLE = HERE.parents[1] / "shared/data/criteo_kaggle/criteo_kaggle_dev.tsv"
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
ENV = dict(os.environ, NUMBA_NUM_THREADS="1")


def make_text(path: Path, rows: int) -> str:
    """Criteo TSV of ``rows`` lines: the Kaggle sample repeated, or generated."""
    if KAGGLE.exists():
        lines = KAGGLE.read_bytes().splitlines(keepends=True)
        source = "Kaggle sample, tiled"
    else:
        from textdata import criteo_text
        lines = criteo_text(20_000).encode().splitlines(keepends=True)
        source = "generated Criteo-shaped lines"
    with open(path, "wb") as fh:
        for i in range(rows):
            fh.write(lines[i % len(lines)])
    return source


def mpips(n: int, *args: str) -> str:
    r = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-m", "mpips", *args],
                       capture_output=True, text=True, timeout=900, env=ENV)
    if r.returncode:
        raise SystemExit(r.stderr)
    return r.stdout


def prep_rate(text: Path, out: Path, ranks: int) -> float:
    line = mpips(ranks, "prep", str(text), "--out", str(out))
    return float(re.search(r"\(([\d,]+) rows/s\)", line).group(1).replace(",", ""))


def read_rate(data: Path, batch: int, shuffled: bool, repeats: int = 3) -> float:
    """One process reading worker 0's half of the training rows, a batch at a time."""
    plan = plan_data(TrainConfig(data=str(data)))
    lo, hi = share(*plan.train_range, 0, 2)
    order = epoch_order(n_batches(hi - lo, batch), 0, 0, 0, shuffle_block(batch)) \
        if shuffled else None
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = sum(len(b) for b in plan.train.batches(lo, hi, batch, order))
        best = max(best, rows / (time.perf_counter() - t0))
    return best


def rewrite(src: Path, dst: Path, compression: str | None) -> int:
    """A copy of prepared shards with ``compression`` for every dataset; its bytes."""
    shutil.copytree(src, dst)
    for shard in dst.glob("shard-*.h5"):
        tmp = shard.with_suffix(".new")
        with h5py.File(shard, "r") as f, h5py.File(tmp, "w") as g:
            g.attrs.update(f.attrs)
            for name in ("ids", "vals", "labels"):
                ds = f[name]
                g.create_dataset(name, data=ds[:], chunks=ds.chunks, maxshape=ds.maxshape,
                                 compression=compression)
        tmp.replace(shard)
    manifest = json.loads((dst / "manifest.json").read_text())
    for s in manifest["shards"]:
        s["bytes"] = (dst / s["file"]).stat().st_size
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return sum(s["bytes"] for s in manifest["shards"])


def train_rate(data: Path, model: str, batch: int) -> float:
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as m:
        mpips(4, "train", "--data", str(data), "--model", model, "--epochs", "1",
              "--batch-size", str(batch), "--metrics-out", m.name)
        return json.loads(Path(m.name).read_text().splitlines()[-1])["samples_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        text = tmp / "data.tsv"
        rec: dict = {"rows": args.rows, "source": make_text(text, args.rows),
                     "text_bytes": text.stat().st_size, "cores": os.cpu_count(),
                     "batch_size": args.batch_size}
        rec["prep_rows_per_s_1_rank"] = prep_rate(text, tmp / "s1", 1)
        rec["prep_rows_per_s_2_ranks"] = prep_rate(text, tmp / "s2", 2)
        shards = tmp / "s2"
        rec["read"] = {}
        for comp in ("as written", "lzf", "gzip", None):
            folder = shards if comp == "as written" else tmp / f"c-{comp}"
            size = sum(p.stat().st_size for p in shards.glob("shard-*.h5")) \
                if comp == "as written" else rewrite(shards, folder, comp)
            rec["read"][comp or "none"] = {
                "bytes": size,
                "rows_per_s": read_rate(folder, args.batch_size, False),
                "shuffled_rows_per_s": read_rate(folder, args.batch_size, True)}
        rec["text_read_rows_per_s"] = read_rate(text, args.batch_size, False, 1)
        for model in ("lr", "deepfm"):
            rec[f"{model}_samples_per_s"] = train_rate(shards, model, args.batch_size)
        # Each worker reads its own share in its own process, in shuffled blocks: one
        # reader (the slower of in order and shuffled) against one worker's training rate.
        written = rec["read"]["as written"]
        shard_read = min(written["rows_per_s"], written["shuffled_rows_per_s"])
        for model in ("lr", "deepfm"):
            rec[f"read_over_{model}"] = shard_read / (rec[f"{model}_samples_per_s"] / 2)
    finally:
        shutil.rmtree(tmp)
    if args.json:
        print(json.dumps(rec))
        return
    print(f"{rec['rows']:,} rows ({rec['source']}, {rec['text_bytes'] / 2**20:.0f} MiB), "
          f"{rec['cores']} cores, batch {args.batch_size}")
    print(f"prep: {rec['prep_rows_per_s_1_rank']:,.0f} rows/s with 1 rank, "
          f"{rec['prep_rows_per_s_2_ranks']:,.0f} with 2")
    for comp, r in rec["read"].items():
        print(f"shard read ({comp:10s}, {r['bytes'] / 2**20:6.1f} MiB): "
              f"{r['rows_per_s']:,.0f} rows/s in order, {r['shuffled_rows_per_s']:,.0f} "
              f"shuffled (one process, one worker's share)")
    print(f"text read: {rec['text_read_rows_per_s']:,.0f} rows/s (one process)")
    for model in ("lr", "deepfm"):
        print(f"train {model}: {rec[f'{model}_samples_per_s']:,.0f} samples/s (4 ranks, 2 "
              f"workers); one reader / one worker's training = "
              f"{rec[f'read_over_{model}']:.1f}x")


if __name__ == "__main__":
    main()
