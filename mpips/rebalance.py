"""Rebalancing: which partitions to move so that no server holds every step back. Pure.

The scheduler feeds it, once per round of load reports, every active server's busy time
per step (the time it needs to apply and acknowledge one step of pushes) and busy share
(``load.LoadStats``). It wants a move when, for ``window`` rounds in a row, the slowest
active server needs more than ``1 + margin`` times the mean time per step (and is busy
more than ``MIN_BUSY`` of the time). A plan then moves partitions from the slowest
servers to the fastest, in order of load per byte (most first, so the fewest bytes
move), each only if it narrows the gap between the two, until the slowest is predicted
within ``margin / 4`` of the mean (as the moves change it) or ``max_bytes`` would be
exceeded. Time per step, unlike a busy share, does not saturate when a server is the
bottleneck. The plan is made as soon as the imbalance is seen, and a pause (which stops
every worker) is asked for only when it moves something and is worth it: the time it is
predicted to save over the rest of the job (the share of a step the slowest server
loses, times the time left) must be at least ``PAYBACK`` times what the last move's
pause cost. The pause ``take``s the plan, unless the placement changed in between.

Each server's cost per unit of load (a slow server's is high) predicts what a partition
adds to one server and takes from the other: at first its time per step over the load it
holds; after a move, the change in its time per step over the change in its load (part
of a step's time no move changes: receiving, acknowledging, calls per table), so later
plans aim better. Measurements are noisy on a shared machine, so a plan moves at most
``STEP`` of a server's load, and a marginal cost is believed only between half and one
and a half times the average.

It never oscillates on a steady load: it acts only on an imbalance seen ``window``
rounds in a row, measures afresh after every pause, aims well inside the margin that
makes it act, and leaves a moved partition where it is for ``TABU_PLANS`` plans. On a
noisy load (a shared machine) a plan may not help: then it waits twice as many rounds
before the next, up to ``MAX_WINDOW``, and back to ``window`` once a plan helps.

With standby servers it brings the next one in when every active server is busy more than
``JOIN_BUSY`` of the time for ``window`` rounds and they are balanced: the servers are
then the bottleneck, and a join moves only the ring's minimum onto the new server.
"""
from __future__ import annotations

from collections import deque
from typing import Optional, Sequence

import numpy as np

from .load import LoadStats, ServerLoad
from .models import TableSpec
from .placement import Moves, Placement, join
from .ring import PARTITIONS, name_salt, partition_sizes

MIN_BUSY = 0.05      # below this a server is as good as idle: nothing worth moving
JOIN_BUSY = 0.5      # every server busy this share of the time: bring a standby in
TABU_PLANS = 3       # plans for which a moved partition stays where it went
STEP = 0.7           # the most of a server's load one plan moves off it
HELPED = 0.75        # a plan helped if at most this share of its imbalance is left
MAX_WINDOW = 16      # rounds: the longest that plans which did not help make it wait
PAYBACK = 3.0        # a plan must save this many times what its pause is expected to cost


def partition_bytes(specs: Sequence[TableSpec], state_slots: int,
                    partitions: int = PARTITIONS) -> np.ndarray:
    """Bytes of rows and optimiser state each partition holds over all tables."""
    out = np.zeros(partitions)
    for s in specs:
        out += partition_sizes(s.rows, name_salt(s.name), partitions) * (s.dim * 4.0
                                                                         * (1 + state_slots))
    return out


class Rebalancer:
    """Decides when to move partitions and which (see the module's docstring)."""

    def __init__(self, stats: LoadStats, part_bytes: np.ndarray, margin: float,
                 window: int, max_bytes: float, standby: Sequence[int] = ()) -> None:
        self.stats, self.bytes = stats, part_bytes
        self.margin, self.window, self.max_bytes = margin, window, max_bytes
        self.first_window = window
        self.standby = list(standby)         # may join, in this order
        # per round: (active servers, their seconds per step, their busy shares)
        self.history: list[tuple[tuple[int, ...], np.ndarray, np.ndarray]] = []
        self.tabu: dict[int, int] = {}
        self._before: Optional[tuple[np.ndarray, np.ndarray]] = None   # owner, times
        # the plan for the latest round: (placement epoch, moves, what they start from,
        # the imbalance they start from)
        self.ready: Optional[tuple[int, Moves, Optional[tuple], float]] = None
        self._excess: Optional[float] = None   # the imbalance the last plan started from

    def observe(self, active: Sequence[int], per_step: np.ndarray, shares: np.ndarray,
                placement: Placement, time_left: float = float("inf"),
                pause_cost: float = 0.0) -> bool:
        """One round of the active servers' seconds per step and busy shares. True when a
        plan that changes ``placement`` is ready: then ask for a pause, whose planner
        ``take``s it. A wanted balance that no partition can narrow, or whose predicted
        saving over the job's ``time_left`` seconds is under ``PAYBACK`` times
        ``pause_cost`` (the seconds the last move's pause took), asks for no pause."""
        self.history = [*self.history[-(self.window - 1):],
                        (tuple(active), np.asarray(per_step, float),
                         np.asarray(shares, float))]
        self.ready = None
        self._judge_last_plan()
        wanted = self.wanted()
        if wanted == "join":
            self.ready = (placement.epoch, join(placement, self.standby[0]), None, 0.0)
        elif wanted == "balance" and list(active) == placement.active():
            median = np.median([t for _, t, _ in self.history], axis=0)
            per_step = np.zeros(placement.n_servers)
            per_step[list(active)] = median
            moves, before, after = self._balance(placement, list(active), per_step)
            saving = 1.0 - after / float(median.max()) if median.max() > 0 else 0.0
            if saving * time_left < PAYBACK * pause_cost:
                moves = Moves.none()
            self.ready = (placement.epoch, moves, before, _excess(median))
        return self.ready is not None and len(self.ready[1]) > 0

    def _judge_last_plan(self) -> None:
        """Once the first rounds after a plan are in: if it left more than ``HELPED`` of
        the imbalance it started from (noise, or load that no move changes), wait twice
        as many rounds before the next one (up to ``MAX_WINDOW``); if it helped, go back
        to the configured window. So a noisy load does not make it move again and again."""
        if self._excess is None or len(self.history) < self.first_window:
            return
        left = float(np.median([_excess(t) for _, t, _ in self.history]))
        self.window = self.first_window if left <= HELPED * self._excess \
            else min(2 * self.window, MAX_WINDOW)
        self._excess = None

    def wanted(self) -> Optional[str]:
        """What the rounds seen ask for: ``"balance"``, ``"join"`` or None."""
        if len(self.history) < self.window or len({a for a, _, _ in self.history}) != 1:
            return None
        active = self.history[-1][0]
        if len(active) > 1 and all(self._imbalanced(t, b) for _, t, b in self.history):
            return "balance"
        if self.standby and all(b.min() > JOIN_BUSY for _, _, b in self.history):
            return "join"
        return None

    def _imbalanced(self, per_step: np.ndarray, shares: np.ndarray) -> bool:
        top = int(np.argmax(per_step))
        return shares[top] > MIN_BUSY and \
            per_step[top] > float(per_step.mean()) * (1 + self.margin)

    def restart(self) -> None:
        """A pause happened: the next decisions rest on new measurements only."""
        self.history, self.ready = [], None

    def take(self, placement: Placement) -> Moves:
        """The plan ``observe`` made, to carry out now (none if the placement changed
        since): its partitions stay put for ``TABU_PLANS`` plans, and the next plan
        learns from what it changes."""
        ready = self.ready
        self.restart()
        if ready is None or ready[0] != placement.epoch or not len(ready[1]):
            return Moves.none()
        _, moves, before, excess = ready
        self.tabu = {p: n - 1 for p, n in self.tabu.items() if n > 1}
        self.tabu.update(dict.fromkeys(moves.partitions.tolist(), TABU_PLANS))
        if moves.reason == "join":
            self.standby.pop(0)
        else:
            self._before, self._excess = before, excess
        return moves

    def _balance(self, placement: Placement, active: list[int], per_step: np.ndarray
                 ) -> tuple[Moves, Optional[tuple[np.ndarray, np.ndarray]], float]:
        """The moves that even the servers out, what they start from (owners, times per
        step) for the marginal costs of the next plan, and the slowest active server's
        time per step predicted after them."""
        owner, load = placement.pmap.owner, self.stats.partition_load
        held = np.bincount(owner, weights=load, minlength=placement.n_servers)
        pred = per_step.astype(float).copy()
        cost = self._costs(active, held, pred)
        if cost is None:
            return Moves.none(), None, float(pred[active].max())
        before = (owner.copy(), pred.copy())
        queues = {s: deque(self._candidates(owner, load, s)) for s in active}
        room = STEP * held                       # load each server may still give away
        moved, parts, owners = 0.0, [], []
        while True:
            open_ = [s for s in active if queues[s]]
            if not open_:
                break
            s = max(open_, key=lambda x: pred[x])
            d = min(active, key=lambda x: pred[x])
            if pred[s] <= float(pred[active].mean()) * (1 + self.margin / 4) or d == s:
                break
            p = queues[s].popleft()
            gain, cost_d = cost[s] * load[p], cost[d] * load[p]
            if pred[d] + cost_d >= pred[s] - gain or load[p] > room[s]:
                continue                         # too big: it would not narrow the gap
            if moved + self.bytes[p] > self.max_bytes:
                break
            room[s] -= load[p]
            pred[s] -= gain
            pred[d] += cost_d
            moved += self.bytes[p]
            parts.append(p)
            owners.append(d)
        return (Moves(np.array(parts, np.int64), np.array(owners, np.int32), "balance"),
                before, float(pred[active].max()))

    def _costs(self, active: list[int], held: np.ndarray, per_step: np.ndarray
               ) -> Optional[np.ndarray]:
        """Each server's time per step per unit of load: the average (time over load),
        or, where the last plan changed its load enough to tell, the marginal one (change
        of time over change of load), kept between half and 1.5 times the average."""
        known = [s for s in active if held[s] > 0 and per_step[s] > 0]
        if not known:
            return None
        cost = np.full(held.size, float(np.median(per_step[known] / held[known])))
        cost[known] = per_step[known] / held[known]
        if self._before is None:
            return cost
        owner0, before = self._before
        held0 = np.bincount(owner0, weights=self.stats.partition_load, minlength=held.size)
        for s in known:
            d_load, d_time = held[s] - held0[s], per_step[s] - before[s]
            if abs(d_load) > 0.05 * held[s] and abs(d_time) > 0.05 * per_step[s] \
                    and d_load * d_time > 0:
                cost[s] = float(np.clip(d_time / d_load, 0.5 * cost[s], 1.5 * cost[s]))
        return cost

    def _candidates(self, owner: np.ndarray, load: np.ndarray, server: int) -> list[int]:
        """The server's partitions that carry load and may move, most load per byte
        first."""
        mine = np.flatnonzero((owner == server) & (load > 0) & (self.bytes > 0))
        mine = np.array([p for p in mine.tolist() if p not in self.tabu], dtype=np.int64)
        if mine.size == 0:
            return []
        return mine[np.argsort(-load[mine] / self.bytes[mine], kind="stable")].tolist()


def _excess(per_step: np.ndarray) -> float:
    """How far the slowest server's time per step is above the mean (0: even)."""
    mean = float(np.mean(per_step))
    return float(np.max(per_step)) / mean - 1 if mean > 0 else 0.0


class LoadWatch:
    """The scheduler's use of load reports: the statistics, the rebalancer's decisions
    (when it has one), and every server's report over the whole job."""

    def __init__(self, stats: LoadStats, rebalancer: Optional[Rebalancer],
                 placement: Placement) -> None:
        self.stats, self.rebalancer = stats, rebalancer
        self.n_servers, self.owner = placement.n_servers, placement.pmap.owner
        self.finals: dict[int, ServerLoad] = {}

    def server(self, s: int, load: ServerLoad, placement: Placement,
               time_left: float = float("inf"), pause_cost: float = 0.0) -> bool:
        """A server's report; True when the rebalancer has a plan worth a pause over the
        job's ``time_left`` seconds (a pause costs about ``pause_cost``) and wants one to
        carry it out."""
        if load.final:
            self.finals[s] = load
            return False
        self.stats.server(s, load)
        active = placement.active()
        if self.rebalancer is None or not self.stats.round_complete(active):
            return False
        return self.rebalancer.observe(active, self.stats.per_step[active],
                                       self.stats.shares[active], placement, time_left,
                                       pause_cost)

    def after_pause(self, placement: Placement) -> None:
        """Measure afresh after every pause (shares across a move or a wait mislead)."""
        self.stats.placement_changed(placement.epoch)
        self.owner = placement.pmap.owner
        if self.rebalancer is not None:
            self.rebalancer.restart()

    @property
    def all_final(self) -> bool:
        """Every server has sent its report over the whole job (its last message)."""
        return len(self.finals) == self.n_servers

    def server_load(self) -> list[float]:
        """Each server's share of the partitions' recent load (what workers pulled and
        pushed, sampled), by where the partitions live now."""
        load = self.stats.partition_load
        total = float(load.sum())
        held = np.bincount(self.owner, weights=load, minlength=self.n_servers)
        return [round(float(x) / total, 4) if total else 0.0 for x in held]

    def progress(self) -> dict:
        """For a progress record: each server's latest busy share, busy milliseconds and
        rows per step and share of the partitions' load, and the placement's epoch."""
        return {"server_busy": [round(float(x), 4) for x in self.stats.shares],
                "server_step_ms": [round(1e3 * float(x), 3) for x in self.stats.per_step],
                "server_rows": [round(float(x), 1) for x in self.stats.rows_per_step],
                "server_load": self.server_load(), "map_epoch": self.stats.epoch}

    def summary(self, hottest: int = 8) -> dict:
        """For the final record: each server's busy share of the job's time, rows per
        step and share of the load, and the partitions with the most recent load."""
        loads = [self.finals.get(s) for s in range(self.n_servers)]
        load = self.stats.partition_load
        top = np.argsort(-load, kind="stable")[:hottest]
        total = float(load.sum()) or 1.0
        return {"server_busy": [round(x.share, 4) if x else None for x in loads],
                "server_rows_per_step": [round(x.rows / x.steps, 1) if x and x.steps
                                         else 0.0 for x in loads],
                "server_load": self.server_load(),
                "hot_partitions": [[int(p), round(float(load[p]) / total, 5)]
                                   for p in top if load[p] > 0]}
