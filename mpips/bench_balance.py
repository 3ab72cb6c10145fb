"""``mpips bench balance``: training throughput with and without rebalancing, with even
servers and with one slow server, all in one run (one ``mpiexec``), so the ratios compare
like with like.

Every job trains the same model on the same built-in data with 2 servers; the slow server
is server 0 made FACTOR times slower by sleeping (``--slow-server``). Jobs run
interleaved, ``--repeats`` times, the even static one first and last in each repeat (the
baseline of the ratios; the two runs together show how far noise alone moves a ratio),
every second repeat in reverse order (so that no mode always follows the same job);
the table shows medians of the whole job's rate and of
the rate over its second half (once a balanced job has settled), the moves made, the bytes
they moved, the pause each cost and the scheduler's CPU seconds spent deciding, and the
ratios the design aims at (also within each repeat, which shows how far noise moves
them): with a slow server, balancing against a fixed placement (at least 1.5) and against
even servers (at least 0.6: two servers, one at a third of the speed, serve at most 2/3
of what two even ones do); with even servers, balancing against a fixed placement (at
most 3 % slower).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from mpi4py import MPI

from .bench_sync import interleaved
from .config import TrainConfig
from .errors import ConfigError
from .job import prepare
from .wire import bcast_json

# (label, slow server, rebalance). The even static job runs first and last in every
# repeat: the runs without a slow server or rebalancing are the baseline of every ratio
# (``baseline``), and the two together say how far the same job moves between runs.
MODES = (("even static", False, "off"), ("even balanced", False, "auto"),
         ("slow static", True, "off"), ("slow balanced", True, "auto"),
         ("even static again", False, "off"))
BASELINE = ("even static", "even static again")


def check_balance(args: argparse.Namespace, size: int) -> None:
    """Bad sizes or too few ranks, found before any communication."""
    if args.factor < 1 or args.repeats < 1 or args.rows < 1000:
        raise ConfigError("--factor must be >= 1, --repeats >= 1 and --rows >= 1000")
    if size < 4:
        raise ConfigError("the balance benchmark needs 2 servers and a worker: run with "
                          "mpiexec -n 4 or more")
    prepare(configs(args)[0][2], size)


def modes(args: argparse.Namespace) -> tuple[tuple[str, bool, str], ...]:
    """The modes of one repeat: all, or with ``--even-only`` the even jobs alone (more
    repeats in the same time, to pin down what balancing costs when nothing moves)."""
    return tuple(m for m in MODES if not (args.even_only and m[1]))


def configs(args: argparse.Namespace, metrics_out: str | None = None
            ) -> list[tuple[str, bool, TrainConfig]]:
    """(mode, slow, settings) for every job of one repeat."""
    # Fixed work, as the figures were measured: no validation, admission or L2.
    base = TrainConfig(synthetic_rows=args.rows, epochs=args.epochs, servers=2,
                       model=args.model, optimizer=args.optimizer, lr=args.lr,
                       batch_size=args.batch_size, embedding_dim=args.embedding_dim,
                       sync=args.sync, progress_seconds=0.5, metrics_out=metrics_out,
                       val_fraction=0.0, min_count=0, l2=0.0)
    return [(label, slow, base.replace(rebalance=rebalance,
                                       slow_server=f"0:{args.factor:g}" if slow else None))
            for label, slow, rebalance in modes(args)]


def second_half_rate(path: Path) -> float:
    """Samples per second over the second half of a job, from its progress records."""
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    progress = [r for r in recs if r["event"] == "progress"]
    if len(progress) < 2:
        return float("nan")
    end = progress[-1]
    mid = min(progress, key=lambda r: abs(r["seconds"] - end["seconds"] / 2))
    return (end["samples"] - mid["samples"]) / (end["seconds"] - mid["seconds"]) \
        if end["seconds"] > mid["seconds"] else float("nan")


def figures(m: dict, metrics: Path) -> dict[str, float]:
    """What one job contributes (``metrics``: its progress records)."""
    pauses = m["move_pause_seconds"]
    return {"samples_per_s": m["samples_per_s"], "second_half": second_half_rate(metrics),
            "auc": m["auc"], "moves": m["moves"], "moved_mib": m["moved_bytes"] / 2**20,
            "pause_s": statistics.median(pauses) if pauses else 0.0,
            "busy0": m["server_busy"][0], "busy1": m["server_busy"][1],
            "decide_s": m["rebalance_seconds"]}


RATIOS = (("slow_balanced_vs_static", "slow balanced", "slow static"),
          ("slow_balanced_vs_even", "slow balanced", "even static"),
          ("even_balanced_vs_static", "even balanced", "even static"),
          ("even_static_again", "even static again", "even static"))


def ratios(runs: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
    """The ``RATIOS`` whose two modes ran."""
    return [(name, a, b) for name, a, b in RATIOS if a in runs and b in runs]


def baseline(runs: dict[str, list[dict]]) -> list[dict]:
    """The even static runs of every repeat, first and last (``BASELINE``), pooled: per
    repeat, the mean of the two."""
    first, last = (runs[mode] for mode in BASELINE)
    return [{k: (a[k] + b[k]) / 2 for k in a} for a, b in zip(first, last)]


def table(runs: dict[str, list[dict]], args: argparse.Namespace, ranks: int) -> dict:
    """Medians and ratios (of the whole jobs' rates, and of their second halves) as one
    record. A ratio to the even static job is to the median of both its runs in every
    repeat (and, by repeat, to their mean); ``even_static_again`` compares the two, which
    shows how far noise alone moves a ratio."""
    med = {mode: {k: statistics.median(r[k] for r in runs[mode]) for k in runs[mode][0]}
           for mode in runs}
    both = runs[BASELINE[0]] + runs[BASELINE[1]]
    pooled = {k: statistics.median(r[k] for r in both) for k in both[0]}
    rec = {"ranks": ranks, "workers": ranks - 3, "cores": os.cpu_count(),
           "factor": args.factor, "repeats": args.repeats, "rows": args.rows,
           "model": args.model, "optimizer": args.optimizer, "lr": args.lr,
           "batch_size": args.batch_size, "embedding_dim": args.embedding_dim,
           "sync": args.sync, "modes": med}
    for name, a, b in ratios(runs):
        pool = b == BASELINE[0] and a not in BASELINE
        over, per_repeat = (pooled, baseline(runs)) if pool else (med[b], runs[b])
        rec[name] = med[a]["samples_per_s"] / over["samples_per_s"]
        rec[name + "_second_half"] = med[a]["second_half"] / over["second_half"]
        rec[name + "_by_repeat"] = [x["samples_per_s"] / y["samples_per_s"]
                                    for x, y in zip(runs[a], per_repeat)]
    return rec


def report(rec: dict) -> str:
    """The human table."""
    lines = [f"mpips bench balance: {rec['ranks']} ranks (2 servers, {rec['workers']} "
             f"workers) on {rec['cores']} cores; {rec['model']} + {rec['optimizer']}, dim "
             f"{rec['embedding_dim']}, batch {rec['batch_size']}/worker, {rec['rows']:,} "
             f"rows, {rec['sync']}; "
             + (f"slow server 0 {rec['factor']:g}x" if "slow static" in rec["modes"]
                else "even servers only") + f"; medians of {rec['repeats']}",
             f"{'':18}{'samples/s':>24}",
             f"{'mode':18}{'whole job':>12}{'2nd half':>12}{'AUC':>8}{'moves':>7}"
             f"{'MiB moved':>11}{'pause/move':>12}{'busy 0':>8}{'busy 1':>8}{'deciding':>10}"]
    for mode in rec["modes"]:
        r = rec["modes"][mode]
        lines.append(f"{mode:18}{r['samples_per_s']:>12,.0f}{r['second_half']:>12,.0f}"
                     f"{r['auc']:>8.4f}{r['moves']:>7.0f}{r['moved_mib']:>11.1f}"
                     f"{r['pause_s']:>11.3f}s{r['busy0']:>8.0%}{r['busy1']:>8.0%}"
                     f"{r['decide_s']:>9.3f}s")
    targets = {"slow_balanced_vs_static": "target >= 1.5",
               "slow_balanced_vs_even": "target >= 0.6",
               "even_balanced_vs_static": "target >= 0.97",
               "even_static_again": "the same job: noise alone"}
    for name, a, b in RATIOS:
        if name not in rec:
            continue
        each = " ".join(f"{x:.2f}" for x in rec[name + "_by_repeat"])
        lines.append(f"{a} / {b}: {rec[name]:.3f} whole job, "
                     f"{rec[name + '_second_half']:.3f} second half ({targets[name]}); "
                     f"by repeat {each}")
    return "\n".join(lines)


def run_balance(args: argparse.Namespace, comm: MPI.Intracomm) -> int:
    """Collective over ``comm``: every job in turn; rank 0 prints the table. Each job's
    progress records go to a temporary file on rank 0, for the second half's rate."""
    folder = bcast_json(comm, tempfile.mkdtemp(prefix="mpips-balance-")
                        if comm.Get_rank() == 0 else None)
    metrics = Path(folder) / "job.jsonl"
    try:
        jobs = [(mode, f"{mode:18}", cfg) for mode, _, cfg in configs(args, str(metrics))]
        runs = interleaved(jobs, args, comm, lambda m: figures(m, metrics),
                           lambda m: f"  {m['moves']} moves", alternate=True)
        if comm.Get_rank() == 0:
            rec = table(runs, args, comm.Get_size())
            print(json.dumps(rec) if args.json else report(rec), flush=True)
    finally:
        if comm.Get_rank() == 0:
            shutil.rmtree(folder, ignore_errors=True)
    return 0
