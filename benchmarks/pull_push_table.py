"""Run ``mpips bench pull-push`` in several layouts, interleaved, and print a Markdown table
of the medians. The machine is shared and noisy: interleaving spreads the noise evenly.

    python benchmarks/pull_push_table.py --repeats 3 [--mpiexec .venv/bin/mpiexec]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

LAYOUTS = [(5, 2, "auto"), (5, 2, "get"), (4, 1, "auto"), (4, 1, "get")]
KEYS = ("pull_rows_per_s", "local_gather_rows_per_s", "pull_ratio", "push_rows_per_s",
        "local_update_rows_per_s", "push_ratio")


def run(mpiexec: str, ranks: int, servers: int, pull: str) -> dict:
    cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpips", "bench", "pull-push",
           "--servers", str(servers), "--pull", pull, "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    args = ap.parse_args()
    runs: dict[tuple, list[dict]] = {layout: [] for layout in LAYOUTS}
    for i in range(args.repeats):
        for layout in LAYOUTS:
            runs[layout].append(run(args.mpiexec, *layout))
            print(f"run {i + 1}/{args.repeats} {layout} done", file=sys.stderr, flush=True)
    print("| ranks | servers | workers | pull mode | pull rows/s | local gather rows/s "
          "| pull / local | push+Adagrad rows/s | local update rows/s | push / local |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for layout, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in KEYS}
        r0 = rs[0]
        print(f"| {r0['ranks']} | {r0['servers']} | {r0['workers']} | {r0['pull_mode']} "
              f"| {med['pull_rows_per_s'] / 1e6:.1f} M "
              f"| {med['local_gather_rows_per_s'] / 1e6:.1f} M "
              f"| {med['pull_ratio']:.2f} | {med['push_rows_per_s'] / 1e6:.2f} M "
              f"| {med['local_update_rows_per_s'] / 1e6:.1f} M | {med['push_ratio']:.2f} |")


if __name__ == "__main__":
    main()
