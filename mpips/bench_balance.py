"""``mpips bench balance``: training throughput with and without rebalancing, with even
servers and with one slow server, all in one run (one ``mpiexec``), so the ratios compare
like with like.

Every job trains the same model on the same built-in data with 2 servers; the slow server
is server 0 made FACTOR times slower by sleeping (``--slow-server``). Jobs run
interleaved, ``--repeats`` times; the table shows medians, the moves made, the bytes they
moved and the pause each cost, and the ratios the design aims at: with a slow server,
balancing against a fixed placement (at least 1.5) and against even servers (at least 0.6:
two servers, one at a third of the speed, serve at most 2/3 of what two even ones do);
with even servers, balancing against a fixed placement (at most 3 % slower).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

from mpi4py import MPI

from .bench_sync import interleaved
from .config import TrainConfig
from .errors import ConfigError
from .job import prepare

# (label, slow server, rebalance)
MODES = (("even static", False, "off"), ("even balanced", False, "auto"),
         ("slow static", True, "off"), ("slow balanced", True, "auto"))


def check_balance(args: argparse.Namespace, size: int) -> None:
    """Bad sizes or too few ranks, found before any communication."""
    if args.factor < 1 or args.repeats < 1 or args.rows < 1000:
        raise ConfigError("--factor must be >= 1, --repeats >= 1 and --rows >= 1000")
    if size < 4:
        raise ConfigError("the balance benchmark needs 2 servers and a worker: run with "
                          "mpiexec -n 4 or more")
    prepare(configs(args)[0][2], size)


def configs(args: argparse.Namespace) -> list[tuple[str, bool, TrainConfig]]:
    """(mode, slow, settings) for every job of one repeat."""
    base = TrainConfig(synthetic_rows=args.rows, epochs=args.epochs, servers=2,
                       model=args.model, optimizer=args.optimizer,
                       batch_size=args.batch_size, embedding_dim=args.embedding_dim,
                       progress_seconds=0.5)
    return [(label, slow, base.replace(rebalance=rebalance,
                                       slow_server=f"0:{args.factor:g}" if slow else None))
            for label, slow, rebalance in MODES]


def figures(m: dict) -> dict[str, float]:
    """What one job contributes."""
    pauses = m["move_pause_seconds"]
    return {"samples_per_s": m["samples_per_s"], "auc": m["auc"], "moves": m["moves"],
            "moved_mib": m["moved_bytes"] / 2**20,
            "pause_s": statistics.median(pauses) if pauses else 0.0,
            "busy0": m["server_busy"][0], "busy1": m["server_busy"][1]}


def table(runs: dict[str, list[dict]], args: argparse.Namespace, ranks: int) -> dict:
    """Medians and ratios as one record."""
    med = {mode: {k: statistics.median(r[k] for r in runs[mode]) for k in runs[mode][0]}
           for mode, *_ in MODES}
    rate = {mode: med[mode]["samples_per_s"] for mode in med}
    return {"ranks": ranks, "workers": ranks - 3, "cores": os.cpu_count(),
            "factor": args.factor, "repeats": args.repeats, "rows": args.rows,
            "model": args.model, "optimizer": args.optimizer, "batch_size": args.batch_size,
            "embedding_dim": args.embedding_dim, "modes": med,
            "slow_balanced_vs_static": rate["slow balanced"] / rate["slow static"],
            "slow_balanced_vs_even": rate["slow balanced"] / rate["even static"],
            "even_balanced_vs_static": rate["even balanced"] / rate["even static"]}


def report(rec: dict) -> str:
    """The human table."""
    lines = [f"mpips bench balance: {rec['ranks']} ranks (2 servers, {rec['workers']} "
             f"workers) on {rec['cores']} cores; {rec['model']} + {rec['optimizer']}, dim "
             f"{rec['embedding_dim']}, batch {rec['batch_size']}/worker, {rec['rows']:,} "
             f"rows, BSP; slow server 0 {rec['factor']:g}x; medians of {rec['repeats']}",
             f"{'mode':16}{'samples/s':>12}{'AUC':>8}{'moves':>7}{'MiB moved':>11}"
             f"{'pause/move':>12}{'busy 0':>8}{'busy 1':>8}"]
    for mode, *_ in MODES:
        r = rec["modes"][mode]
        lines.append(f"{mode:16}{r['samples_per_s']:>12,.0f}{r['auc']:>8.4f}"
                     f"{r['moves']:>7.0f}{r['moved_mib']:>11.1f}{r['pause_s']:>11.3f}s"
                     f"{r['busy0']:>8.0%}{r['busy1']:>8.0%}")
    lines += [f"slow server: balanced / static {rec['slow_balanced_vs_static']:.2f} "
              f"(target >= 1.5), balanced / even servers {rec['slow_balanced_vs_even']:.2f} "
              f"(target >= 0.6)",
              f"even servers: balanced / static {rec['even_balanced_vs_static']:.3f} "
              f"(target >= 0.97)"]
    return "\n".join(lines)


def run_balance(args: argparse.Namespace, comm: MPI.Intracomm) -> int:
    """Collective over ``comm``: every job in turn; rank 0 prints the table."""
    runs = interleaved([(mode, f"{mode:14}", cfg) for mode, _, cfg in configs(args)], args,
                       comm, figures, lambda m: f"  {m['moves']} moves")
    if comm.Get_rank() == 0:
        rec = table(runs, args, comm.Get_size())
        print(json.dumps(rec) if args.json else report(rec), flush=True)
    return 0
