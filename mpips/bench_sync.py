"""``mpips bench straggler``: training throughput of BSP, SSP and ASP with and without a
slow worker, all in one run (one ``mpiexec``), so the ratios compare like with like.

Every job trains LR on the same built-in data; the straggler is worker 0 made FACTOR
times slower by sleeping (``--slow-worker``). Each worker owns a fixed share of the rows, so
every job ends when the straggler finishes its share whatever the mode: the figure is
therefore the throughput while all workers are still busy (up to the moment the first
worker finishes), from progress records every 20 ms. Jobs run interleaved, ``--repeats``
times; the table shows medians and what each mode keeps of its own no-straggler rate.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

from mpi4py import MPI

from .config import TrainConfig
from .errors import ConfigError
from .job import prepare, train

MODES = (("bsp", 0), ("ssp", 3), ("async", 0))


def check_straggler(args: argparse.Namespace, size: int) -> None:
    """Bad sizes or too few ranks, found before any communication."""
    if args.factor < 1 or args.repeats < 1 or args.rows < 1000:
        raise ConfigError("--factor must be >= 1, --repeats >= 1 and --rows >= 1000")
    if size < args.servers + 3:
        raise ConfigError(f"a straggler needs at least 2 workers: run with mpiexec -n "
                          f"{args.servers + 3} or more")
    prepare(configs(args)[0][2], size)


def configs(args: argparse.Namespace) -> list[tuple[str, bool, TrainConfig]]:
    """(mode, with straggler, settings) for every job of one repeat."""
    base = TrainConfig(synthetic_rows=args.rows, epochs=1, servers=args.servers,
                       batch_size=args.batch_size, progress_seconds=0.04,
                       delay_jitter=args.jitter)
    out = []
    for mode, staleness in MODES:
        for slow in (False, True):
            cfg = base.replace(sync=mode, staleness=staleness,
                               slow_worker=f"0:{args.factor:g}" if slow else None)
            out.append((mode, slow, cfg))
    return out


def table(rates: dict[tuple[str, bool], list[float]], args: argparse.Namespace,
          ranks: int) -> dict:
    """Medians and ratios as one record."""
    rec: dict = {"ranks": ranks, "servers": args.servers, "workers": ranks - 1 - args.servers,
                 "cores": os.cpu_count(), "factor": args.factor, "repeats": args.repeats,
                 "rows": args.rows, "batch_size": args.batch_size, "jitter": args.jitter}
    for mode, _ in MODES:
        base = statistics.median(rates[mode, False])
        slow = statistics.median(rates[mode, True])
        rec[mode] = {"samples_per_s": base, "straggler_samples_per_s": slow,
                     "kept": slow / base}
    return rec


def report(rec: dict) -> str:
    """The human table."""
    lines = [f"mpips bench straggler: {rec['ranks']} ranks ({rec['servers']} server(s), "
             f"{rec['workers']} workers) on {rec['cores']} cores; worker 0 {rec['factor']:g}x "
             f"slower; {rec['rows']:,} rows, batch {rec['batch_size']}/worker, jitter "
             f"{rec['jitter']:g}s; medians of {rec['repeats']}",
             f"{'mode':8}{'no straggler':>16}{'straggler':>14}{'kept':>8}"]
    for mode, staleness in MODES:
        r = rec[mode]
        name = f"ssp({staleness})" if mode == "ssp" else mode
        lines.append(f"{name:8}{r['samples_per_s']:>16,.0f}{r['straggler_samples_per_s']:>14,.0f}"
                     f"{r['kept']:>8.2f}")
    return "\n".join(lines)


def run_straggler(args: argparse.Namespace, comm: MPI.Intracomm) -> int:
    """Collective over ``comm``: every job in turn; rank 0 prints the table."""
    rates: dict[tuple[str, bool], list[float]] = {}
    for i in range(args.repeats):
        for mode, slow, cfg in configs(args):
            metrics = train(cfg, comm, verbose=False).metrics
            if metrics is not None:
                rates.setdefault((mode, slow), []).append(metrics["active_samples_per_s"])
                if not args.json:
                    print(f"  repeat {i + 1}/{args.repeats} {mode:5} "
                          f"{'straggler' if slow else 'even':9} "
                          f"{metrics['samples_per_s']:>12,.0f} samples/s", flush=True)
    if comm.Get_rank() == 0:
        rec = table(rates, args, comm.Get_size())
        print(json.dumps(rec) if args.json else report(rec), flush=True)
    return 0
