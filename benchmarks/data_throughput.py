"""Data throughput in one run: the compiled parsers against the reference parser on the
same bytes; ``mpips prep`` rows/s per rank with each parser (one process), and with 1 and 2
ranks from plain and from gzipped text; gzip inflate rates; one process reading its share
of the shards (in order and in a shuffled batch order, for each HDF5 compression) and of
the text (plain and .gz); and LR and DeepFM training samples/s from shards and from text.

    python benchmarks/data_throughput.py [--rows 400000] [--json]

Data: the Kaggle sample in ../shared/data tiled to --rows when present, else generated
Criteo-shaped lines; everything goes to a temporary folder that is removed at the end.
"""
from __future__ import annotations

import argparse
import gzip
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
from mpi4py import MPI

from mpips import prep as prep_module
from mpips.cli import build_parser
from mpips.config import TrainConfig
from mpips.data import epoch_order, n_batches, share, shuffle_block
from mpips.data.compressed import Decompressed
from mpips.data.criteo import CriteoFormat
from mpips.data.libsvm import LibSVMFormat
from mpips.data.parse import parse_bytes, parse_reference
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


def best_rate(work, rows: int, repeats: int) -> float:
    """Rows per second of the fastest of ``repeats`` calls of ``work()``."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        best = max(best, rows / (time.perf_counter() - t0))
    return best


def parse_rates(data: bytes, fmt, repeats: int = 3) -> dict:
    """Both parsers on the same blocks of whole lines (4 MiB, as prep reads them)."""
    blocks, at = [], 0
    while at < len(data):
        cut = data.rfind(b"\n", at, at + (1 << 22)) + 1 or len(data)
        blocks.append(memoryview(data)[at:cut])
        at = cut
    rows = data.count(b"\n")
    rec = {}
    for name, parse in (("reference", parse_reference), ("compiled", parse_bytes)):
        parse(fmt, blocks[0][:1000], 0, "bench", 1, "skip")          # compile, warm
        rec[name] = best_rate(lambda: [parse(fmt, b, 0, "bench", 1) for b in blocks], rows,
                              1 if name == "reference" else repeats)
    rec["speedup"] = rec["compiled"] / rec["reference"]
    return rec


def prep_per_rank(text: Path, out: Path) -> dict:
    """``mpips prep`` in this process (one rank), with each parser."""
    args = build_parser().parse_args(["prep", str(text), "--out", str(out)])
    rec = {}
    for name, parse in (("reference", parse_reference), ("compiled", parse_bytes)):
        prep_module.parse_bytes = parse
        t0 = time.perf_counter()
        m = prep_module.run_prep(prep_module.check_prep(args, 1), MPI.COMM_SELF, verbose=False)
        rec[name] = m.rows / (time.perf_counter() - t0)
    prep_module.parse_bytes = parse_bytes
    rec["speedup"] = rec["compiled"] / rec["reference"]
    return rec


def inflate_rates(packed: Path) -> dict:
    """MiB/s of decompressed text: the standard library's gzip, mpips' zlib-ng stream."""
    def drain(fh):
        n = 0
        while chunk := fh.read(1 << 22):
            n += len(chunk)
        return n
    rec = {}
    for name, opener in (("stdlib gzip", gzip.open), ("zlib-ng (mpips)", Decompressed)):
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            with opener(packed) as fh:
                n = drain(fh)
            best = max(best, n / 2**20 / (time.perf_counter() - t0))
        rec[name] = best
    return rec


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


def train_rate(data: Path, model: str, batch: int) -> tuple[float, float]:
    """(samples/s on the training clock, seconds of the whole mpiexec job): the clock
    starts once the workers hold their rows (read once, kept in memory up to 1 GiB)."""
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as m:
        t0 = time.perf_counter()
        mpips(4, "train", "--data", str(data), "--model", model, "--epochs", "1",
              "--batch-size", str(batch), "--metrics-out", m.name)
        wall = time.perf_counter() - t0
        return json.loads(Path(m.name).read_text().splitlines()[-1])["samples_per_s"], wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        rec = measure(tmp, args)
    finally:
        shutil.rmtree(tmp)
    if args.json:
        print(json.dumps(rec))
    else:
        show(rec)


def measure(tmp: Path, args: argparse.Namespace) -> dict:
    text = tmp / "data.tsv"
    rec: dict = {"rows": args.rows, "source": make_text(text, args.rows),
                 "text_bytes": text.stat().st_size, "cores": os.cpu_count(),
                 "batch_size": args.batch_size}
    packed = tmp / "data.tsv.gz"
    with open(text, "rb") as fh, gzip.open(packed, "wb", compresslevel=6) as out:
        shutil.copyfileobj(fh, out, 1 << 22)
    rec["gz_bytes"] = packed.stat().st_size
    data = text.read_bytes()
    rec["parse_criteo"] = parse_rates(data, CriteoFormat())
    del data
    from textdata import libsvm_text
    svm = libsvm_text(100_000).encode()
    rec["parse_libsvm"] = parse_rates(svm, LibSVMFormat(6))
    rec["prep_per_rank"] = prep_per_rank(text, tmp / "p")
    rec["inflate_mib_per_s"] = inflate_rates(packed)
    for ranks in (1, 2):
        rec[f"prep_rows_per_s_{ranks}_rank"] = prep_rate(text, tmp / f"s{ranks}", ranks)
        rec[f"prep_gz_rows_per_s_{ranks}_rank"] = prep_rate(packed, tmp / f"g{ranks}", ranks)
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
    for name, path in (("text", text), ("gz", packed)):
        rec[f"{name}_read_rows_per_s"] = read_rate(path, args.batch_size, False, 1)
        rec[f"{name}_shuffled_read_rows_per_s"] = read_rate(path, args.batch_size, True, 1)
    for model in ("lr", "deepfm"):
        rec[f"{model}_samples_per_s"], rec[f"{model}_job_s"] = \
            train_rate(shards, model, args.batch_size)
    for name, path in (("text", text), ("gz", packed)):
        rec[f"lr_{name}_samples_per_s"], rec[f"lr_{name}_job_s"] = \
            train_rate(path, "lr", args.batch_size)
    # Each worker reads its own share in its own process, in shuffled blocks: one
    # reader (the slower of in order and shuffled) against one worker's training rate.
    written = rec["read"]["as written"]
    shard_read = min(written["rows_per_s"], written["shuffled_rows_per_s"])
    for model in ("lr", "deepfm"):
        rec[f"read_over_{model}"] = shard_read / (rec[f"{model}_samples_per_s"] / 2)
    return rec


def show(rec: dict) -> None:
    print(f"{rec['rows']:,} rows ({rec['source']}, {rec['text_bytes'] / 2**20:.0f} MiB, "
          f"{rec['gz_bytes'] / 2**20:.0f} MiB gzipped), {rec['cores']} cores, batch "
          f"{rec['batch_size']}")
    for fmt in ("criteo", "libsvm"):
        r = rec[f"parse_{fmt}"]
        print(f"parse {fmt}: compiled {r['compiled']:,.0f} rows/s, reference "
              f"{r['reference']:,.0f} ({r['speedup']:.1f}x; one process, same bytes)")
    r = rec["prep_per_rank"]
    print(f"prep, one rank in one process: compiled {r['compiled']:,.0f} rows/s, reference "
          f"{r['reference']:,.0f} ({r['speedup']:.1f}x)")
    print("inflate: " + ", ".join(f"{k} {v:,.0f} MiB/s"
                                  for k, v in rec["inflate_mib_per_s"].items()))
    print(f"prep (mpiexec): {rec['prep_rows_per_s_1_rank']:,.0f} rows/s with 1 rank, "
          f"{rec['prep_rows_per_s_2_rank']:,.0f} with 2; from .gz "
          f"{rec['prep_gz_rows_per_s_1_rank']:,.0f} with 1 rank, "
          f"{rec['prep_gz_rows_per_s_2_rank']:,.0f} with 2 (one file: one rank works)")
    for comp, r in rec["read"].items():
        print(f"shard read ({comp:10s}, {r['bytes'] / 2**20:6.1f} MiB): "
              f"{r['rows_per_s']:,.0f} rows/s in order, {r['shuffled_rows_per_s']:,.0f} "
              f"shuffled (one process, one worker's share)")
    for name in ("text", "gz"):
        print(f"{name} read: {rec[f'{name}_read_rows_per_s']:,.0f} rows/s in order, "
              f"{rec[f'{name}_shuffled_read_rows_per_s']:,.0f} shuffled (one process)")
    for model in ("lr", "deepfm"):
        print(f"train {model} from shards: {rec[f'{model}_samples_per_s']:,.0f} samples/s "
              f"(4 ranks, 2 workers); one reader / one worker's training = "
              f"{rec[f'read_over_{model}']:.1f}x")
    for name, what in (("text", "text"), ("gz", ".gz"), ("", "shards")):
        key = f"lr_{name}_" if name else "lr_"
        print(f"train lr from {what}: {rec[key + 'samples_per_s']:,.0f} samples/s on the "
              f"training clock; whole job {rec[key + 'job_s']:.1f} s")


if __name__ == "__main__":
    main()
