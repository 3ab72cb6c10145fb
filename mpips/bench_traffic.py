"""``mpips bench traffic``: bytes between workers and servers per push codec, training
speed on slow links, and the pull cache, all in one run (one ``mpiexec``), interleaved,
medians of ``--repeats``.

Three groups of jobs on the same built-in data: (1) LR and FM (``--embedding-dim``, 16 by
default) with every codec, no link limit, and FM with ``int8`` both ways (``--pull-codec
int8``): push bytes per sample with keys included, the keys alone, those of the last
pushes, pull bytes, samples/s and AUC, each against ``none``; (2) FM with ``none``,
``int8``, ``topk+int8`` and ``int8`` both ways at ``--link-gbps 10`` and ``1`` (the aid
makes every push and pull of a worker wait its bytes / G); (3) FM under SSP(3) without and
with ``--pull-cache``: pull bytes and AUC. The targets of the design are printed beside the
ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

from mpi4py import MPI

from .bench_sync import interleaved
from .codecs import Compression
from .config import TrainConfig
from .errors import ConfigError
from .job import prepare

CODECS = ("none", "fp16", "bf16", "int8", "topk", "topk+int8")
# (push codec, pull codec) of the FM jobs on slow links; int8 both ways also without one.
LINK_CODECS = (("none", "none"), ("int8", "none"), ("topk+int8", "none"), ("int8", "int8"))
LINKS = (0.0, 10.0, 1.0)


def check_traffic(args: argparse.Namespace, size: int) -> None:
    """Bad sizes or too few ranks, found before any communication."""
    if args.repeats < 1 or args.rows < 1000 or args.cache_rows < 1:
        raise ConfigError("--repeats must be >= 1, --rows >= 1000 and --cache-rows >= 1")
    if size < 2 + args.servers:
        raise ConfigError(f"the traffic benchmark needs a scheduler, {args.servers} "
                          f"server(s) and a worker: run with mpiexec -n {3 + args.servers}")
    prepare(jobs(args)[0][2], size)


def jobs(args: argparse.Namespace) -> list[tuple[tuple, str, TrainConfig]]:
    """(key, label, settings) of every job of one repeat."""
    # Fixed work, as in the other benchmarks: no validation, admission or L2 (a key not
    # admitted yet has a zero gradient, which topk would never send).
    base = TrainConfig(synthetic_rows=args.rows, epochs=1, servers=args.servers,
                       batch_size=args.batch_size, embedding_dim=args.embedding_dim,
                       compress_keep=args.keep, progress_seconds=60.0,
                       val_fraction=0.0, min_count=0, l2=0.0)
    out = [(("codec", model, codec, 0.0, "none"), f"{model:3} {codec:10} no limit",
            base.replace(model=model, compress=codec))
           for model in ("lr", "fm") for codec in CODECS]
    out += [(("codec", "fm", codec, link, pull), f"fm  {codec:10} pull {pull:4} "
             f"{f'{link:g} Gb/s' if link else 'no limit'}",
             base.replace(model="fm", compress=codec, pull_codec=pull, link_gbps=link))
            for link in LINKS for codec, pull in LINK_CODECS
            if pull != "none" or link > 0]
    ssp = base.replace(model="fm", sync="ssp", staleness=3)
    out += [(("cache", rows), f"fm  ssp(3) pull cache {rows}", ssp.replace(pull_cache=rows))
            for rows in (0, args.cache_rows)]
    return out


def codes_rows(name: str, dim: int) -> bool:
    """Does codec ``name`` code a model's rows of ``dim`` values (not ``none``, nor a value
    codec that would not make them smaller: ``int8`` of LR's one value goes as float32,
    so that job measures ``none`` or ``topk`` again)?"""
    comp = Compression.parse(name, 0.1, "bench")
    return name != "none" and comp.for_rows_of(dim) == comp


def figures(m: dict) -> dict[str, float]:
    """What one job contributes: bytes per sample, rate, AUC."""
    n = max(1, m["samples"])
    return {"push": m["push_bytes"] / n, "push_raw": m["push_bytes_raw"] / n,
            "last": m["push_bytes_last"] / n,
            "keys": m["push_key_bytes"] / n, "keys_raw": m["push_key_bytes_raw"] / n,
            "pull": m["pull_bytes"] / n, "pull_raw": m["pull_bytes_raw"] / n,
            "samples_per_s": m["samples_per_s"], "auc": m["auc"]}


def table(runs: dict, args: argparse.Namespace, ranks: int) -> dict:
    """Medians per job and the ratios the design aims at, as one record."""
    med = {key: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for key, rs in runs.items()}
    cell = {"|".join(map(str, key)): v for key, v in med.items()}

    def codec(model: str, name: str, link: float = 0.0, pull: str = "none") -> dict:
        return med[("codec", model, name, link, pull)]

    def faster(model: str, name: str, link: float = 0.0, pull: str = "none") -> float:
        """Samples/s of a job over those of ``none`` at the same link: the median over
        repeats of the two runs of one repeat (steadier on a shared machine than a
        ratio of medians: a repeat's jobs run minutes apart at most)."""
        pairs = zip(runs[("codec", model, name, link, pull)],
                    runs[("codec", model, "none", link, "none")])
        return statistics.median(a["samples_per_s"] / b["samples_per_s"] for a, b in pairs)

    fm_none, lr_none = codec("fm", "none"), codec("lr", "none")
    plain, cached = med[("cache", 0)], med[("cache", args.cache_rows)]
    ratios = {
        "fm_int8_push_fewer": fm_none["push"] / codec("fm", "int8")["push"],
        "fm_topk_int8_push_fewer": fm_none["push"] / codec("fm", "topk+int8")["push"],
        "fm_topk_int8_push_fewer_but_last": (fm_none["push"] - fm_none["last"])
        / (codec("fm", "topk+int8")["push"] - codec("fm", "topk+int8")["last"]),
        "lr_keys_fewer": lr_none["keys_raw"] / lr_none["keys"],
        "lr_none_push_fewer_than_float32": lr_none["push_raw"] / lr_none["push"],
        "fm_int8_speedup_1gbps": faster("fm", "int8", 1.0),
        "fm_int8_speedup_10gbps": faster("fm", "int8", 10.0),
        "fm_int8_both_speedup_1gbps": faster("fm", "int8", 1.0, "int8"),
        "fm_int8_both_speedup_10gbps": faster("fm", "int8", 10.0, "int8"),
        "fm_int8_both_rate_vs_none": faster("fm", "int8", 0.0, "int8"),
        "fm_int8_pull_fewer": fm_none["pull"] / codec("fm", "int8", 0.0, "int8")["pull"],
        "fm_int8_both_auc_change": codec("fm", "int8", 0.0, "int8")["auc"] - fm_none["auc"],
        "codec_rate_vs_none": {f"{model} {name}": faster(model, name)
                               for model, dim in (("lr", 1), ("fm", args.embedding_dim + 1))
                               for name in CODECS if codes_rows(name, dim)},
        "pull_cache_pull_bytes_cut": 1 - cached["pull"] / plain["pull"],
        "pull_cache_auc_change": cached["auc"] - plain["auc"]}
    ratios["slowest_codec_rate_vs_none"] = min(ratios["codec_rate_vs_none"].values())
    return {"ranks": ranks, "servers": args.servers, "workers": ranks - 1 - args.servers,
            "cores": os.cpu_count(), "repeats": args.repeats, "rows": args.rows,
            "batch_size": args.batch_size, "embedding_dim": args.embedding_dim,
            "keep": args.keep, "cache_rows": args.cache_rows, "jobs": cell, **ratios}


TARGETS = {"fm_int8_push_fewer": ">= 3", "fm_topk_int8_push_fewer": ">= 20",
           "lr_keys_fewer": ">= 2.5", "fm_int8_both_speedup_1gbps": ">= 2",
           "slowest_codec_rate_vs_none": ">= 0.9", "pull_cache_pull_bytes_cut": ">= 0.5",
           "pull_cache_auc_change": "within 0.002"}


def report(rec: dict) -> str:
    """The human table."""
    lines = [f"mpips bench traffic: {rec['ranks']} ranks ({rec['servers']} server(s), "
             f"{rec['workers']} workers) on {rec['cores']} cores; {rec['rows']:,} built-in "
             f"rows, batch {rec['batch_size']}/worker, FM k = {rec['embedding_dim']}, topk "
             f"keeps {rec['keep']:.0%}; medians of {rec['repeats']}; bytes per sample",
             f"{'job':34}{'push':>9}{'float32':>9}{'keys':>7}{'last':>7}{'pull':>8}"
             f"{'samples/s':>11}{'AUC':>8}"]
    for key, r in rec["jobs"].items():
        parts = key.split("|")
        label = (f"{parts[1]} {parts[2]}" + (f" + pull {parts[4]}" if parts[4] != "none"
                                             else "")
                 + (f" @ {float(parts[3]):g} Gb/s" if float(parts[3]) else "")
                 if parts[0] == "codec" else f"fm ssp(3) pull cache {parts[1]} rows")
        lines.append(f"{label:34}{r['push']:>9.1f}{r['push_raw']:>9.1f}{r['keys']:>7.2f}"
                     f"{r['last']:>7.1f}{r['pull']:>8.1f}{r['samples_per_s']:>11,.0f}"
                     f"{r['auc']:>8.4f}")
    lines.append("samples/s against none's, median over repeats of each repeat's pair: "
                 + ", ".join(f"{job} {r:.2f}" for job, r in rec["codec_rate_vs_none"].items()))
    for name, target in TARGETS.items():
        lines.append(f"{name}: {rec[name]:.3f} (target {target})")
    lines.append(f"lr_none_push_fewer_than_float32: {rec['lr_none_push_fewer_than_float32']:.3f}"
                 f"; fm_int8_speedup_10gbps: {rec['fm_int8_speedup_10gbps']:.3f}"
                 f"; fm_topk_int8_push_fewer_but_last: "
                 f"{rec['fm_topk_int8_push_fewer_but_last']:.3f}")
    lines.append("; ".join(f"{name}: {rec[name]:.3f}" for name in (
        "fm_int8_speedup_1gbps", "fm_int8_both_speedup_10gbps", "fm_int8_both_rate_vs_none",
        "fm_int8_pull_fewer", "fm_int8_both_auc_change")))
    return "\n".join(lines)


def run_traffic(args: argparse.Namespace, comm: MPI.Intracomm) -> int:
    """Collective over ``comm``: every job in turn; rank 0 prints the table."""
    runs = interleaved(jobs(args), args, comm, figures,
                       lambda m: f"  push {m['push_bytes'] / max(1, m['samples']):.1f} B/sample")
    if comm.Get_rank() == 0:
        rec = table(runs, args, comm.Get_size())
        print(json.dumps(rec) if args.json else report(rec), flush=True)
    return 0
