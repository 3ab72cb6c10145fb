"""The server role: hold shards and apply pushes -- in BSP rounds, or as they arrive."""
from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .checkpoint.protocol import Saver
from .clocks import BspRound, StalenessLog, SyncPolicy, Start, bound_violated, job_bound
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


@dataclass
class Served:
    """How serving ended: pushes applied, SSP violations, the steps done (the label of a
    final checkpoint), and whether the job was stopped at a checkpoint."""

    applied: int = 0
    violations: int = 0
    steps: int = 0
    stopped: bool = False


def serve_rounds(tables: Tables, immediate: list[int], in_round: list[int],
                 log: StalenessLog, round_: BspRound, saver: Optional[Saver]) -> Served:
    """BSP: each round applies one push per active worker in worker order; tables that are
    not BSP are applied as each push arrives. Between rounds workers may stop for a
    checkpoint (their markers arrive instead of pushes)."""
    out = Served()
    while round_.active:
        pushes: dict[int, Push] = {}
        while not round_.complete:
            push = idle_poll(tables.poll_push)
            if push.mark:
                if saver is not None and (stop := saver.mark(push.worker, push.step,
                                                             round_.active)) is not None:
                    if stop:
                        out.steps, out.stopped = round_.step, True
                        return out
                continue
            round_.add(push.worker, push.step, push.last)
            pushes[push.worker] = push
            if immediate:
                tables.apply([push], immediate, log)
        in_order = [pushes[w] for w in round_.order()]
        tables.apply(in_order, in_round, log, step=round_.step + 1)
        tables.ack(in_order)
        out.applied += len(in_order)
        round_ = round_.next()
    out.steps = round_.step
    return out


def serve_free(tables: Tables, bound: int | None, log: StalenessLog,
               last_step: dict[int, int], saver: Optional[Saver]) -> Served:
    """SSP and ASP: apply and acknowledge each push as it arrives; count pushes that break
    the SSP bound (an independent check of the workers' clocks). ``last_step`` holds the
    last step applied of every worker still training."""
    out = Served(steps=max(last_step.values(), default=-1) + 1)
    while last_step:
        push = idle_poll(tables.poll_push)
        if push.mark:
            if saver is not None and saver.mark(push.worker, push.step, list(last_step)):
                out.stopped = True
                return out
            continue
        if bound is not None and bound_violated(last_step, push.worker, push.step, bound):
            out.violations += 1
        tables.apply([push], None, log)
        tables.ack([push])
        out.applied += 1
        out.steps = max(out.steps, push.step + 1)
        last_step[push.worker] = push.step
        if push.last:
            del last_step[push.worker]
            if saver is not None and saver.check(list(last_step)):
                out.stopped = True
                return out
    return out


def run_server(roles: Roles, tables: Tables, policies: Sequence[SyncPolicy], seed: int = 0,
               start: Optional[Start] = None, log: Optional[StalenessLog] = None,
               run_dir: Optional[Path] = None) -> ServerReport:
    """Serve until every worker has sent its last push (or the job stops at a
    checkpoint). A resumed job passes ``start`` (where its workers stand) and ``log``,
    with its shards already loaded; ``run_dir``: where checkpoints go, one of them when
    training ends (None: the job writes none)."""
    if start is None or log is None:
        init_shards(tables, roles.index, seed)
        start, log = Start.fresh(roles.n_workers), StalenessLog(tables.names)
    tables.warm_up()
    tables.ready()
    saver = Saver(roles, tables, log, run_dir) if run_dir is not None else None
    rounds, bound = job_bound(policies)
    if rounds:
        immediate = [i for i, p in enumerate(policies) if p.mode != "bsp"]
        in_round = [i for i, p in enumerate(policies) if p.mode == "bsp"]
        served = serve_rounds(tables, immediate, in_round, log, start.round(), saver)
    else:
        served = serve_free(tables, bound, log, start.last_steps(), saver)
    if saver is not None and not served.stopped and served.applied:
        saver.final(served.steps)
    return ServerReport(served.applied, served.violations, log, peak_rss(),
                        table_bytes(tables))
