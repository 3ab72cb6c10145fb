"""What a pause moves: scheduled joins and drains of servers, the ``--move-every`` test
aid, and the balancer's plan when a move was asked for. Pure, no MPI."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .config import TrainConfig
from .errors import ConfigError
from .placement import Moves, Placement, drain, join, seeded_moves
from .rebalance import Rebalancer

AID_PARTITIONS = 2048        # partitions the --move-every aid moves each time (1/32)


class Planner:
    """The moves of a pause at step ``label``, in this order: a scheduled join (the next
    standby server), scheduled drains, the test aid, the rebalancer's plan (only when a
    move was requested). Several at once are combined into one change of placement."""

    def __init__(self, cfg: TrainConfig, active: int,
                 rebalancer: Optional[Rebalancer] = None) -> None:
        self.joins = {step: active + k for k, step in enumerate(sorted(cfg.join_at))}
        self.drains: dict[int, list[int]] = {}
        for server, step in cfg.drains():
            self.drains.setdefault(step, []).append(server)
        self.move_every, self.seed, self.rebalancer = cfg.move_every, cfg.seed, rebalancer

    def __call__(self, label: int, requested: bool, placement: Placement
                 ) -> Optional[Moves]:
        steps = []
        if label in self.joins:
            steps.append(lambda p: join(p, self.joins[label]))
        for server in self.drains.get(label, []):
            steps.append(lambda p, s=server: drain(p, s))
        if self.move_every and label % self.move_every == 0:
            steps.append(lambda p: seeded_moves(p, self.seed, AID_PARTITIONS))
        if requested and self.rebalancer is not None:
            steps.append(self.rebalancer.take)
        now, reasons = placement, []
        for plan in steps:
            moves = plan(now)
            if len(moves):
                now, reasons = now.after(moves), [*reasons, moves.reason]
        changed = np.flatnonzero(now.pmap.owner != placement.pmap.owner)
        if changed.size == 0:
            return None
        return Moves(changed.astype(np.int64), now.pmap.owner[changed].astype(np.int32),
                     ",".join(dict.fromkeys(reasons)))


def check_schedule(cfg: TrainConfig, active: int, standby: int) -> None:
    """Refuse scheduled joins and drains that cannot happen: more joins than standby
    servers, a drain of a server that holds no partitions by then, or of the last one."""
    if len(cfg.join_at) > standby:
        raise ConfigError(f"--join-at names {len(cfg.join_at)} step(s) but there are only "
                          f"{standby} standby server(s) (--standby)")
    holding = set(range(active))
    events = [(step, 0, active + k) for k, step in enumerate(sorted(cfg.join_at))] \
        + [(step, 1, server) for server, step in cfg.drains()]
    for step, kind, server in sorted(events):
        if kind == 0:
            holding.add(server)
            continue
        if server not in holding:
            raise ConfigError(f"--drain-at {server}:{step}: server {server} holds no "
                              f"partitions at step {step}")
        if len(holding) == 1:
            raise ConfigError(f"--drain-at {server}:{step}: server {server} is the last one "
                              f"holding partitions")
        holding.discard(server)
