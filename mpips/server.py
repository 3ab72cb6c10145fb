"""The server role: hold shards, and for each BSP step apply every worker's push at once."""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .errors import MpipsError
from .tables import FLAG_LAST, TAG_ACK, Push, Tables
from .topology import Roles, idle_poll


def init_shards(tables: Tables) -> None:
    """Initial parameters: zeros (the LR convention; per-key seeded init comes with FM)."""
    for t in tables.tables.values():
        t.shard[:] = 0.0


def gather_step(tables: Tables, active: set[int], step: int) -> list[Push]:
    """Wait (politely) for one push from every active worker; return them in worker order."""
    got: dict[int, Push] = {}
    while len(got) < len(active):
        push = idle_poll(tables.poll_push)
        if push.worker not in active or push.worker in got or push.step != step:
            raise MpipsError(f"server: unexpected push from worker {push.worker} for step "
                             f"{push.step} while collecting step {step}")
        got[push.worker] = push
    return [got[w] for w in sorted(got)]


def run_server(roles: Roles, tables: Tables) -> int:
    """BSP service loop until every worker has sent its last push; returns steps served."""
    init_shards(tables)
    roles.ps.Barrier()                       # shards initialised before any worker pulls
    active = set(range(roles.n_workers))
    step = 0
    sends: list[MPI.Request] = []
    ack = np.zeros(1, dtype=np.int64)
    while active:
        pushes = gather_step(tables, active, step)
        tables.apply(pushes)
        MPI.Request.Waitall(sends)
        ack[0] = step
        sends = [roles.ps.Isend(ack, roles.worker_ps_rank(p.worker), TAG_ACK) for p in pushes]
        active -= {p.worker for p in pushes if p.flags & FLAG_LAST}
        step += 1
    MPI.Request.Waitall(sends)
    return step
