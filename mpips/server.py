"""The server role: hold shards and apply pushes -- in BSP rounds, or as they arrive."""
from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .clocks import BspRound, StalenessLog, SyncPolicy, bound_violated, job_bound
from .kernels.init import normal_rows
from .ring import mix64, name_salt
from .tables import Push, Tables
from .topology import Roles
from .waiting import idle_poll


@dataclass
class ServerReport:
    """What a server saw: pushes applied, SSP-bound violations, staleness per table, and
    its memory: peak resident bytes against the raw bytes of its rows and state."""

    applied: int
    violations: int
    staleness: StalenessLog
    peak_rss: int = 0
    table_bytes: int = 0


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux ``VmHWM``, else getrusage)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def table_bytes(tables: Tables) -> int:
    """Raw bytes of this server's rows and optimiser state."""
    return sum(t.shard.nbytes + sum(a.nbytes for a in t.state.values())
               for t in tables.tables.values())


INIT_CHUNK = 1 << 20      # rows initialised at a time, to bound the temporary memory


def init_shards(tables: Tables, index: int, seed: int) -> None:
    """Initial parameters: zeros, or seeded normal columns where a table asks for them;
    a row's values depend only on (seed, table, key), not on where it lives."""
    for name, t in tables.tables.items():
        t.shard[:] = 0.0
        if t.spec.init_std > 0 and t.shard.shape[0]:
            salt = np.uint64(mix64(np.uint64(seed) ^ np.uint64(name_salt(name, 1 << 62))))
            for first, keys in t.layout.iter_keys(index, INIT_CHUNK):
                normal_rows(t.shard[first:first + keys.size], keys, t.spec.init_from,
                            t.spec.init_std, salt)


def serve_rounds(roles: Roles, tables: Tables, immediate: list[int], in_round: list[int],
                 log: StalenessLog) -> int:
    """BSP: each round applies one push per active worker in worker order; tables that are
    not BSP are applied as each push arrives. Returns the pushes applied."""
    round_, applied = BspRound(0, frozenset(range(roles.n_workers))), 0
    while round_.active:
        pushes: dict[int, Push] = {}
        while not round_.complete:
            push = idle_poll(tables.poll_push)
            round_.add(push.worker, push.step, push.last)
            pushes[push.worker] = push
            if immediate:
                tables.apply([push], immediate, log)
        in_order = [pushes[w] for w in round_.order()]
        tables.apply(in_order, in_round, log, step=round_.step + 1)
        tables.ack(in_order)
        applied += len(in_order)
        round_ = round_.next()
    return applied


def serve_free(roles: Roles, tables: Tables, bound: int | None, log: StalenessLog
               ) -> tuple[int, int]:
    """SSP and ASP: apply and acknowledge each push as it arrives; count pushes that break
    the SSP bound (an independent check of the workers' clocks). Returns (pushes,
    violations)."""
    last_step = {w: -1 for w in range(roles.n_workers)}
    applied = violations = 0
    while last_step:
        push = idle_poll(tables.poll_push)
        if bound is not None and bound_violated(last_step, push.worker, push.step, bound):
            violations += 1
        tables.apply([push], None, log)
        tables.ack([push])
        applied += 1
        last_step[push.worker] = push.step
        if push.last:
            del last_step[push.worker]
    return applied, violations


def run_server(roles: Roles, tables: Tables, policies: Sequence[SyncPolicy], seed: int = 0
               ) -> ServerReport:
    """Serve until every worker has sent its last push."""
    init_shards(tables, roles.index, seed)
    tables.ready()
    log = StalenessLog(tables.names)
    rounds, bound = job_bound(policies)
    if rounds:
        immediate = [i for i, p in enumerate(policies) if p.mode != "bsp"]
        in_round = [i for i, p in enumerate(policies) if p.mode == "bsp"]
        applied = serve_rounds(roles, tables, immediate, in_round, log)
        violations = 0
    else:
        applied, violations = serve_free(roles, tables, bound, log)
    return ServerReport(applied, violations, log, peak_rss(), table_bytes(tables))
