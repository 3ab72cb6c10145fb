"""``mpips bench straggler``: training throughput of BSP, SSP and ASP with and without a
slow worker, all in one run (one ``mpiexec``), so the ratios compare like with like.

Every job trains LR on the same built-in data; the straggler is worker 0 made FACTOR
times slower by sleeping (``--slow-worker``). The figure is the whole job's throughput:
samples over the seconds from the first step to the last. SSP and ASP run balanced (the
default, ``balance``) and, for comparison, with fixed shares (``--balance off``), where
every job ends when the straggler finishes its share. Jobs run interleaved,
``--repeats`` times; the table shows medians and what each mode keeps of its own
no-straggler rate.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Callable, Hashable

from mpi4py import MPI

from .config import TrainConfig
from .errors import ConfigError
from .job import prepare, train

# (label, sync, staleness, balance)
MODES = (("bsp", "bsp", 0, "off"), ("ssp(3)", "ssp", 3, "on"), ("async", "async", 0, "on"),
         ("ssp(3) fixed", "ssp", 3, "off"), ("async fixed", "async", 0, "off"))


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
    # Fixed work, as the figures were measured: no validation, admission or L2.
    base = TrainConfig(synthetic_rows=args.rows, epochs=1, servers=args.servers,
                       batch_size=args.batch_size, progress_seconds=0.04,
                       delay_jitter=args.jitter, val_fraction=0.0, min_count=0, l2=0.0)
    out = []
    for label, sync, staleness, balance in MODES:
        for slow in (False, True):
            cfg = base.replace(sync=sync, staleness=staleness, balance=balance,
                               slow_worker=f"0:{args.factor:g}" if slow else None)
            out.append((label, slow, cfg))
    return out


FIGURES = ("samples_per_s", "auc", "rows_per_step", "staleness_mean")


def figures(metrics: dict) -> dict[str, float]:
    """What one job contributes: throughput, test AUC, rows per step (averaged over the
    workers' steps, not counting the empty last step a balanced worker ends with:
    balanced workers take several batches in a step) and mean staleness."""
    steps = sum(metrics["worker_steps"]) - (len(metrics["worker_steps"])
                                            if metrics["balance"] else 0)
    return {"samples_per_s": metrics["samples_per_s"], "auc": metrics["auc"],
            "rows_per_step": metrics["samples"] / steps if steps else float("nan"),
            "staleness_mean": metrics["staleness_mean"]}


def table(runs: dict[tuple[str, bool], list[dict]], args: argparse.Namespace,
          ranks: int) -> dict:
    """Medians and ratios as one record."""
    rec: dict = {"ranks": ranks, "servers": args.servers, "workers": ranks - 1 - args.servers,
                 "cores": os.cpu_count(), "factor": args.factor, "repeats": args.repeats,
                 "rows": args.rows, "batch_size": args.batch_size, "jitter": args.jitter}
    for mode, *_ in MODES:
        med = {(slow, f): statistics.median(r[f] for r in runs[mode, slow])
               for slow in (False, True) for f in FIGURES}
        rec[mode] = {"samples_per_s": med[False, "samples_per_s"],
                     "straggler_samples_per_s": med[True, "samples_per_s"],
                     "kept": med[True, "samples_per_s"] / med[False, "samples_per_s"],
                     "auc": med[False, "auc"], "straggler_auc": med[True, "auc"],
                     "rows_per_step": med[False, "rows_per_step"],
                     "straggler_rows_per_step": med[True, "rows_per_step"],
                     "staleness_mean": med[False, "staleness_mean"],
                     "straggler_staleness_mean": med[True, "staleness_mean"]}
    return rec


def report(rec: dict) -> str:
    """The human table."""
    lines = [f"mpips bench straggler: {rec['ranks']} ranks ({rec['servers']} server(s), "
             f"{rec['workers']} workers) on {rec['cores']} cores; worker 0 {rec['factor']:g}x "
             f"slower; {rec['rows']:,} rows, batch {rec['batch_size']}/worker, jitter "
             f"{rec['jitter']:g}s; medians of {rec['repeats']}",
             f"{'':14}{'samples/s':>26}{'':7}{'AUC':>16}{'rows/step':>18}"
             f"{'staleness':>18}",
             f"{'mode':14}{'even':>13}{'straggler':>13}{'kept':>7}"
             + f"{'even':>8}{'straggler':>10}" * 3]
    for mode, *_ in MODES:
        r = rec[mode]
        lines.append(f"{mode:14}{r['samples_per_s']:>13,.0f}"
                     f"{r['straggler_samples_per_s']:>13,.0f}{r['kept']:>7.2f}"
                     f"{r['auc']:>8.4f}{r['straggler_auc']:>10.4f}"
                     f"{r['rows_per_step']:>8,.0f}{r['straggler_rows_per_step']:>10,.0f}"
                     f"{r['staleness_mean']:>8.2f}{r['straggler_staleness_mean']:>10.2f}")
    return "\n".join(lines)


Job = tuple[Hashable, str, TrainConfig]        # (key of its figures, label, settings)


def interleaved(jobs: list[Job], args: argparse.Namespace, comm: MPI.Intracomm,
                figures: Callable[[dict], dict],
                note: Callable[[dict], str] = lambda metrics: "",
                alternate: bool = False) -> dict[Hashable, list]:
    """Collective over ``comm``: every job in turn, ``args.repeats`` times; per key, the
    figures of each run (on rank 0, which prints a line per run: on stderr with
    ``args.json``, so that stdout holds only the record). With ``alternate`` every second
    repeat runs the jobs in reverse order, so that what ran just before a job (a warm or
    a cold machine, a job's leftovers) weighs on every job alike."""
    runs: dict[Hashable, list] = {}
    for i in range(args.repeats):
        for key, label, cfg in (jobs[::-1] if alternate and i % 2 else jobs):
            metrics = train(cfg, comm, verbose=False).metrics
            if metrics is not None:
                runs.setdefault(key, []).append(figures(metrics))
                print(f"  repeat {i + 1}/{args.repeats} {label} "
                      f"{metrics['samples_per_s']:>12,.0f} samples/s{note(metrics)}",
                      file=sys.stderr if args.json else sys.stdout, flush=True)
    return runs


def run_straggler(args: argparse.Namespace, comm: MPI.Intracomm) -> int:
    """Collective over ``comm``: every job in turn; rank 0 prints the table."""
    jobs = [((mode, slow), f"{mode:12} {'straggler' if slow else 'even':9}", cfg)
            for mode, slow, cfg in configs(args)]
    runs = interleaved(jobs, args, comm, figures)
    if comm.Get_rank() == 0:
        rec = table(runs, args, comm.Get_size())
        print(json.dumps(rec) if args.json else report(rec), flush=True)
    return 0
