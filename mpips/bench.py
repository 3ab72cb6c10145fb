"""``mpips bench pull-push``: sparse pull and push+Adagrad rows/s of the parameter server
against one process doing the same gather and update with the numba kernels.

Every worker pre-generates Zipf-skewed hashed keys and deduplicates each batch; a row is one
unique key of a batch, for the distributed and the local figures alike. Workers time
``TableClient.pull`` (with ``route``) over all batches, then the update: ``segment_sum`` of
the batch's per-lookup gradient rows, ``TableClient.push`` and the servers' acks (the servers sum
all workers' rows and apply Adagrad). The aggregate rate is the rows of all workers over
the slowest worker's time. Afterwards, while the other ranks idle, the scheduler holds the
whole table and times ``gather_rows``, and ``segment_sum`` + Adagrad, over the same batches:
both sides start from the same per-lookup gradient rows.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable

import numpy as np
from mpi4py import MPI

from .clocks import SyncPolicy
from .errors import ConfigError
from .kernels.sparse import gather_rows, segment_sum, unique_inverse
from .models import TableSpec
from .optim import Optimizer
from .ring import Route, mix64
from .client import TableClient
from .placement import Placement
from .server import run_server
from .store import ShardStore
from .topology import SCHEDULER, SERVER, Roles, plan_roles, split_roles
from .waiting import wait_all
from .wire import gather_json

TABLE, WARMUP, SEED, ZIPF_A = "emb", 3, 1234, 1.2
Batches = list[tuple[np.ndarray, np.ndarray]]


def make_batches(args: argparse.Namespace, worker: int, n: int) -> Batches:
    """``n`` batches of ``worker``: per field a Zipf(1.2) value hashed into the table, then
    deduplicated into (unique keys, each lookup's index into them)."""
    rng = np.random.default_rng([SEED, worker])
    field_salt = np.arange(args.fields, dtype=np.uint64) << np.uint64(40)
    out = []
    for _ in range(n):
        vals = rng.zipf(ZIPF_A, (args.batch, args.fields)).astype(np.uint64)
        keys = (mix64(vals + field_salt) % np.uint64(args.table_rows)).astype(np.int64)
        out.append(unique_inverse(keys.ravel()))
    return out


def gradients(rows: int, dim: int, seed: int) -> np.ndarray:
    """Small random gradient rows: their values do not change the cost."""
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32) * 1e-2


def timed(fn: Callable[[int], None], n: int, group: MPI.Intracomm | None = None) -> float:
    """Seconds spent on ``fn(0..n-1)``, started after a (polite) barrier of ``group``."""
    if group is not None:
        wait_all([group.Ibarrier()])
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return time.perf_counter() - t0


def pull(client: TableClient, keys: np.ndarray, out: np.ndarray) -> Route:
    """Route and pull ``keys`` into the first rows of ``out``, reading the servers'
    versions first as a training step does; returns the route."""
    where = client.route(TABLE, keys)
    client.read_versions()
    client.pull(TABLE, where, out[:keys.size])
    return where


def push(client: TableClient, step: int, last: bool, where: Route, inverse: np.ndarray,
         lookup_grads: np.ndarray) -> None:
    """Sum the batch's per-lookup gradient rows into its unique rows (as the local update
    does), push them and wait until every server applied the step."""
    summed = segment_sum(inverse, lookup_grads, where.order.size)
    client.push(step, last, {TABLE: (where, summed)}).wait()


def run_worker(args: argparse.Namespace, roles: Roles, client: TableClient,
               batches: Batches) -> dict:
    """Warm up, then time all pulls, then all pushes; returns this worker's figures."""
    keys = [u for u, _ in batches]
    out = np.empty((max(k.size for k in keys), args.dim), np.float32)
    grads = gradients(args.batch * args.fields, args.dim, roles.index)
    client.ready()                           # the servers' shards are initialised
    for i in range(WARMUP):
        push(client, i, False, pull(client, keys[i], out), batches[i][1], grads)
    timed_keys, routes = keys[WARMUP:], []
    pull_s = timed(lambda i: routes.append(pull(client, timed_keys[i], out)), args.steps,
                   roles.group)
    push_s = timed(lambda i: push(client, WARMUP + i, i == args.steps - 1, routes[i],
                                  batches[WARMUP + i][1], grads), args.steps, roles.group)
    return {"rows": sum(k.size for k in timed_keys), "pull_s": pull_s, "push_s": push_s,
            "pull_mode": "direct" if client.direct else "get"}


def local_pass(table: np.ndarray, state: dict, batches: Batches, lookup_grads: np.ndarray,
               steps: int) -> tuple[float, float]:
    """Seconds of the timed gathers, then of the timed updates (sum the batch's per-lookup
    gradient rows into its unique rows, then Adagrad), after the warm-up batches."""
    optimizer, out = Optimizer("adagrad"), np.empty_like(lookup_grads)

    def gather(i: int) -> None:
        gather_rows(table, batches[i][0], out[:batches[i][0].size])

    def update(i: int) -> None:
        uniq, inverse = batches[i]
        optimizer.apply(table, state, uniq, segment_sum(inverse, lookup_grads, uniq.size))

    for i in range(WARMUP):
        gather(i)
        update(i)
    return (timed(lambda i: gather(WARMUP + i), steps),
            timed(lambda i: update(WARMUP + i), steps))


def run_local(args: argparse.Namespace, n_workers: int) -> dict:
    """One process with the full table and Adagrad state, over every worker's batches."""
    table = np.empty((args.table_rows, args.dim), np.float32)
    table[:] = 0.0                           # touch the pages, as the servers' init does
    state = Optimizer("adagrad").new_state(table.shape)
    lookup_grads = gradients(args.batch * args.fields, args.dim, n_workers)
    rows, gather_s, update_s = 0, 0.0, 0.0
    for w in range(n_workers):
        batches = make_batches(args, w, WARMUP + args.steps)
        g, u = local_pass(table, state, batches, lookup_grads, args.steps)
        gather_s, update_s = gather_s + g, update_s + u
        rows += sum(k.size for k, _ in batches[WARMUP:])
    return {"rows": rows, "gather_s": gather_s, "update_s": update_s}


def summarize(args: argparse.Namespace, comm: MPI.Intracomm, workers: list[dict],
              local: dict) -> dict:
    """The figures of the run as one flat record."""
    rows = sum(w["rows"] for w in workers)
    pulled = rows / max(w["pull_s"] for w in workers)
    pushed = rows / max(w["push_s"] for w in workers)
    gather, update = local["rows"] / local["gather_s"], local["rows"] / local["update_s"]
    cores = os.cpu_count() or 1
    return {"pull_rows_per_s": pulled, "push_rows_per_s": pushed,
            "local_gather_rows_per_s": gather, "local_update_rows_per_s": update,
            "pull_ratio": pulled / gather, "push_ratio": pushed / update,
            "ranks": comm.Get_size(), "servers": args.servers, "workers": len(workers),
            "cores": cores, "oversubscribed": comm.Get_size() > cores,
            "pull_mode": workers[0]["pull_mode"], "batch": args.batch, "fields": args.fields,
            "dim": args.dim, "table_rows": args.table_rows, "steps": args.steps,
            "unique_rows_per_batch": rows / (args.steps * len(workers)),
            "row_definition": "unique keys per batch, summed over batches and workers"}


def report(r: dict) -> str:
    """The human table."""
    sub = "" if r["oversubscribed"] else "not "
    return "\n".join([
        (f"mpips bench pull-push: {r['ranks']} ranks (1 scheduler, {r['servers']} server(s), "
         f"{r['workers']} worker(s)) on {r['cores']} cores, {sub}oversubscribed; pull mode "
         f"{r['pull_mode']}"),
        (f"batch {r['batch']} x {r['fields']} keys, dim {r['dim']}, {r['table_rows']:,}-row "
         f"table, {r['steps']} timed batches per worker (+{WARMUP} warm-up)"),
        (f"rows = {r['row_definition']} (mean {r['unique_rows_per_batch']:,.0f} per batch of "
         f"{r['batch'] * r['fields']:,} keys)"),
        f"{'':28}{'rows/s':>14}",
        f"{'pull (route + client.pull)':28}{r['pull_rows_per_s']:>14,.0f}",
        f"{'local gather_rows':28}{r['local_gather_rows_per_s']:>14,.0f}",
        f"{'pull / local':28}{r['pull_ratio']:>14.3f}",
        f"{'push + acks (Adagrad)':28}{r['push_rows_per_s']:>14,.0f}",
        f"{'local segment_sum + Adagrad':28}{r['local_update_rows_per_s']:>14,.0f}",
        f"{'push / local':28}{r['push_ratio']:>14.3f}"])


def check_bench(args: argparse.Namespace, size: int) -> None:
    """Bad sizes or too few ranks, found before any communication."""
    for name in ("batch", "fields", "dim", "table_rows", "steps"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    plan_roles(size, args.servers)


def run_pull_push(args: argparse.Namespace, comm: MPI.Intracomm) -> int:
    """Collective over ``comm``: the benchmark; rank 0 prints the figures."""
    roles = split_roles(comm, args.servers)
    mine = None
    if roles.role != SCHEDULER:
        batches = [] if roles.role == SERVER else make_batches(args, roles.index,
                                                               WARMUP + args.steps)
        wait_all([roles.ps.Ibarrier()])      # servers idle while workers make keys
        specs = [TableSpec(TABLE, args.table_rows, args.dim)]
        placement = Placement.start(specs, roles.n_servers, roles.n_servers)
        if roles.role == SERVER:
            with ShardStore(specs, roles, Optimizer("adagrad"), placement, args.pull) as store:
                run_server(store, [SyncPolicy()])
        else:
            with TableClient(specs, roles, placement, args.pull) as client:
                mine = run_worker(args, roles, client, batches)
    wait_all([comm.Ibarrier()])
    figures = gather_json(comm, mine)
    if roles.role == SCHEDULER:
        r = summarize(args, comm, [f for f in figures if f is not None],
                      run_local(args, roles.n_workers))
        print(json.dumps(r) if args.json else report(r), flush=True)
    wait_all([comm.Ibarrier()])              # the others sleep while rank 0 runs locally
    roles.free()
    return 0
