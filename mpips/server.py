"""The server role: hold shards, and for each BSP step apply every worker's push at once."""
from __future__ import annotations

from .clocks import BspRound
from .tables import Tables
from .topology import Roles
from .waiting import idle_poll


def init_shards(tables: Tables) -> None:
    """Initial parameters: zeros (the LR convention; per-key seeded init comes with FM)."""
    for t in tables.tables.values():
        t.shard[:] = 0.0


def run_server(roles: Roles, tables: Tables) -> int:
    """Serve BSP rounds until every worker has sent its last push; returns the rounds."""
    init_shards(tables)
    tables.ready()
    round_ = BspRound(0, frozenset(range(roles.n_workers)))
    while round_.active:
        pushes = {}
        while not round_.complete:
            push = idle_poll(tables.poll_push)
            round_.add(push.worker, push.step, push.last)
            pushes[push.worker] = push
        in_order = [pushes[w] for w in round_.order()]
        tables.apply(in_order)
        tables.ack(in_order)
        round_ = round_.next()
    return round_.step
