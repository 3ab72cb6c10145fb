"""Rebalancing: which partitions to move so that no server holds every step back. Pure.

The scheduler feeds it, once per round of load reports, every active server's busy time
per step (the time it needs to apply and acknowledge one step of pushes) and busy share
(``load.LoadStats``). It wants a move when an imbalance stands out from the jitter of
the measurements: the same active server is the slowest in every round and needs more
than ``1 + 2 margin`` times the mean time per step for ``window`` rounds in a row, or
more than ``1 + margin`` times for ``2 window`` rounds (and is busy more than
``MIN_BUSY`` of the time). A plan then moves partitions from the slowest servers to the
fastest, in order of load per byte (most first, so the fewest bytes move), each only if
it narrows the gap between the two and fits the spare rows of the taker's windows (a
move never waits for new windows), until the slowest is predicted within ``margin / 4``
of the mean (as the moves change it) or ``max_bytes`` would be exceeded. Time per step,
unlike a busy share, does not saturate when a server is the bottleneck. The plan is made as
soon as the imbalance is seen, and a pause (which stops every worker) is asked for only
when it moves something and is worth it: the time it is predicted to save over the rest of
the job (the share of a step the slowest server loses, times the time left) must be at
least ``PAYBACK`` times what the last move's pause cost. The pause ``take``s the plan,
unless the placement changed in between.

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

import time
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
        self.history = [*self.history[-(2 * self.window - 1):],
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
        recent = self.history[-self.window:]
        if len(recent) < self.window or len({a for a, _, _ in recent}) != 1:
            return None
        if len(recent[-1][0]) > 1 and self._stands_out():
            return "balance"
        if self.standby and all(b.min() > JOIN_BUSY for _, _, b in recent):
            return "join"
        return None

    def _stands_out(self) -> bool:
        """An imbalance, not jitter: one server the slowest in every round, by twice the
        margin over the last ``window`` rounds or by the margin over twice as many."""
        for rounds, margin in ((self.window, 2 * self.margin), (2 * self.window, self.margin)):
            recent = self.history[-rounds:]
            if len(recent) == rounds and len({a for a, _, _ in recent}) == 1 \
                    and len({int(np.argmax(t)) for _, t, _ in recent}) == 1 \
                    and all(_imbalanced(t, b, margin) for _, t, b in recent):
                return True
        return False

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
        sizes = np.array([partition_sizes(t.rows, t.salt, t.pmap.partitions)
                          for t in placement.layouts])        # rows per table, partition
        free = placement.capacity - np.array([t.shard_rows for t in placement.layouts])
        queues = {s: deque(self._candidates(owner, load, s, sizes, free[:, [
            a for a in active if a != s]].max(axis=1, initial=0))) for s in active}
        # Python numbers, not NumPy scalars: the loop may look at many partitions.
        times, unit, loads = pred.tolist(), cost.tolist(), load.tolist()
        nbytes = self.bytes.tolist()
        give = (STEP * held).tolist()            # load each server may still give away
        rows, spare = sizes.tolist(), free.T.tolist()     # by table; by server, table
        tables = range(len(rows))
        aim = 1 + self.margin / 4
        moved, parts, owners = 0.0, [], []
        while True:
            open_ = [s for s in active if queues[s]]
            if not open_:
                break
            s = max(open_, key=times.__getitem__)
            d = min(active, key=times.__getitem__)
            if times[s] <= sum(times[a] for a in active) / len(active) * aim or d == s:
                break
            p = queues[s].popleft()
            gain, cost_d = unit[s] * loads[p], unit[d] * loads[p]
            if times[d] + cost_d >= times[s] - gain or loads[p] > give[s] \
                    or any(rows[k][p] > spare[d][k] for k in tables):
                continue                         # too big: it would not narrow the gap,
            if moved + nbytes[p] > self.max_bytes:   # or not fit the taker's windows
                break
            give[s] -= loads[p]
            spare[d] = [spare[d][k] - rows[k][p] for k in tables]
            times[s] -= gain
            times[d] += cost_d
            moved += nbytes[p]
            parts.append(p)
            owners.append(d)
        return (Moves(np.array(parts, np.int64), np.array(owners, np.int32), "balance"),
                before, max(times[a] for a in active))

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

    def _candidates(self, owner: np.ndarray, load: np.ndarray, server: int,
                    sizes: np.ndarray, free: np.ndarray) -> list[int]:
        """The server's partitions that carry load, may move and fit the spare rows
        ``free`` (per table) that some other server has, most load per byte first."""
        mine = np.flatnonzero((owner == server) & (load > 0) & (self.bytes > 0)
                              & (sizes <= free[:, None]).all(axis=0))
        mine = mine[~np.isin(mine, np.fromiter(self.tabu, np.int64, len(self.tabu)))]
        if mine.size == 0:
            return []
        return mine[np.argsort(-load[mine] / self.bytes[mine], kind="stable")].tolist()


def _imbalanced(per_step: np.ndarray, shares: np.ndarray, margin: float) -> bool:
    """The slowest server needs more than ``1 + margin`` times the mean time per step
    and is busy enough to matter."""
    top = int(np.argmax(per_step))
    return shares[top] > MIN_BUSY and per_step[top] > float(per_step.mean()) * (1 + margin)


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
        self.deciding = 0.0          # CPU seconds the rebalancer took over the job

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
        began = time.process_time()
        wants = self.rebalancer.observe(active, self.stats.per_step[active],
                                        self.stats.shares[active], placement, time_left,
                                        pause_cost)
        self.deciding += time.process_time() - began
        return wants

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
        step and share of the load, the partitions with the most recent load, and the
        CPU seconds the rebalancer took to decide (``rebalance_seconds``)."""
        loads = [self.finals.get(s) for s in range(self.n_servers)]
        load = self.stats.partition_load
        top = np.argsort(-load, kind="stable")[:hottest]
        total = float(load.sum()) or 1.0
        return {"server_busy": [round(x.share, 4) if x else None for x in loads],
                "server_rows_per_step": [round(x.rows / x.steps, 1) if x and x.steps
                                         else 0.0 for x in loads],
                "server_load": self.server_load(),
                "hot_partitions": [[int(p), round(float(load[p]) / total, 5)]
                                   for p in top if load[p] > 0],
                "rebalance_seconds": round(self.deciding, 4)}
