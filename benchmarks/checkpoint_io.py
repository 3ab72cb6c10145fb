"""Checkpoint write and read MB/s against plain sequential file I/O of the same bytes.

One process, one run: for each repeat it writes a server file the way a checkpoint does
(HDF5, block CRC32s, fsync, rename) and a plain file of the same arrays (``write`` +
fsync), then reads both back (the checkpoint through its verified reads). Medians are
printed with their ratios. The arrays are an FM table shard with Adagrad state.

    python benchmarks/checkpoint_io.py --rows 4000000 --dim 17 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from mpips.checkpoint.shardfile import ServerFile, write_server_file


def plain_write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        for arr in arrays.values():
            fh.write(memoryview(np.ascontiguousarray(arr)).cast("B"))
        fh.flush()
        os.fsync(fh.fileno())


def plain_read(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "rb") as fh:
        for arr in arrays.values():
            out = np.empty_like(arr)
            fh.readinto(memoryview(out).cast("B"))


def checked_read(path: Path, entry: dict, arrays: dict[str, np.ndarray]) -> None:
    with ServerFile(path, entry) as f:
        for name, arr in arrays.items():
            out = np.empty_like(arr)
            f.read_runs(name, np.array([0]), np.array([0]), np.array([arr.shape[0]]), out)


def timed(fn) -> float:
    """Seconds ``fn`` takes, started with no dirty pages left from earlier writes (those
    would otherwise be flushed on the clock of whichever write comes next)."""
    os.sync()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--dim", type=int, default=17)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="folder on the file system to measure")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    arrays = {"tables/features/rows": rows, "tables/features/accum": np.abs(rows)}
    size = sum(a.nbytes for a in arrays.values())
    times: dict[str, list[float]] = {k: [] for k in ("ckpt_write", "plain_write",
                                                     "ckpt_read", "plain_read")}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ck, plain = Path(tmp) / "server-0000.h5", Path(tmp) / "plain.bin"
        entry: dict = {}
        jobs = {"ckpt_write": lambda: entry.update(write_server_file(ck, arrays, {})),
                "plain_write": lambda: plain_write(plain, arrays),
                "ckpt_read": lambda: checked_read(ck, entry, arrays),
                "plain_read": lambda: plain_read(plain, arrays)}
        for r in range(args.repeats):     # alternate which of each pair goes first
            pairs = [("ckpt_write", "plain_write"), ("ckpt_read", "plain_read")]
            for pair in pairs:
                for name in pair if r % 2 == 0 else pair[::-1]:
                    if name.endswith("write"):        # each write makes a new file
                        (ck if name == "ckpt_write" else plain).unlink(missing_ok=True)
                    times[name].append(timed(jobs[name]))
    mb = {k: size / 2**20 / float(np.median(v)) for k, v in times.items()}
    out = {"mib": size / 2**20, **{f"{k}_mib_s": v for k, v in mb.items()},
           "write_ratio": mb["ckpt_write"] / mb["plain_write"],
           "read_ratio": mb["ckpt_read"] / mb["plain_read"]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
