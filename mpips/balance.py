"""Balancing work between SSP and ASP workers, so that a slow worker does not hold the job
back. Pure, no MPI: the shared counters live on the scheduler's board.

Two mechanisms:

- **Stealing** (as the work pools of difacto and XDL hand out data parts): every worker
  owns the batches of its share for all epochs, in its seeded order, numbered by position.
  One counter per owner hands them out, so each batch is taken exactly once. A worker
  takes its own batches first; when it has none left it takes from the owner with the
  most left. All workers therefore finish together, whatever their speeds.
- **Merging** (after LB-BSP, which sizes each worker's batch to its speed): a worker that
  trains rows at least ``m`` times as fast as the slowest worker takes ``m`` batches in
  one step. Every worker's steps then take about as long. Under SSP the bound
  then no longer makes the fast workers wait for the slow one's clock: they use the time
  for more rows instead. Under ASP the slow worker's pushes no longer miss ``m`` times
  more updates than the others' (its staleness is bounded like theirs). Splitting the
  slow worker's batches instead cannot do this where a step's fixed cost, its pull and
  push, is a large part of it.

BSP never balances: its rounds are fixed batches in a fixed order, so it stays
deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from .data.schedule import Rows, Schedule, schedules as fresh_schedules

if TYPE_CHECKING:
    from .config import TrainConfig

MAX_MERGE = 16          # the most batches one step takes


@dataclass
class Pool:
    """Every owner's batches over all epochs: position ``p`` of owner ``w`` is batch
    ``order(p // n)[p % n]`` of ``w``'s share, where ``n`` is its batches per epoch."""

    schedules: Sequence[Schedule]
    _orders: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, cfg: "TrainConfig", train_range: Rows, n_workers: int) -> "Pool":
        """The pool of a fresh job of ``n_workers`` workers."""
        return cls(fresh_schedules(cfg, train_range, n_workers))

    def ends(self) -> np.ndarray:
        """Each owner's number of positions: batches per epoch times epochs."""
        return np.array([s.steps_per_epoch * s.epochs for s in self.schedules],
                        dtype=np.int64)

    def unit(self, owner: int, position: int) -> tuple[int, Rows]:
        """(epoch, rows) of one position."""
        sched = self.schedules[owner]
        epoch, i = divmod(position, sched.steps_per_epoch)
        key = (owner, epoch)
        if key not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k[0] != owner}
            self._orders[key] = sched.order(epoch)
        return epoch, sched.batch_rows(int(self._orders[key][i]))

    def rows_left(self, owner: int, position: int) -> int:
        """Rows of the owner's positions from ``position`` on (a fresh schedule's steps
        are its positions)."""
        return self.schedules[owner].rows_left(position)


def victim(left: np.ndarray, me: int) -> Optional[int]:
    """Whose batch to take next, given each owner's positions ``left``: my own while I
    have any, else the owner with the most left (the lowest index among equals); None
    once every owner is empty."""
    if left[me] > 0:
        return me
    best = int(np.argmax(left))
    return best if left[best] > 0 else None


def next_batch(take: Callable[[int], int], counters: Callable[[], np.ndarray],
               ends: np.ndarray, me: int, own_first: bool = True
               ) -> Optional[tuple[int, int]]:
    """(owner, position) of the next batch for worker ``me``, or None once every owner's
    batches are taken. ``take(owner)`` hands out the owner's next position (atomically;
    it may lie past the owner's end), ``counters()`` reads every owner's counter. The
    worker tries its own counter first (``own_first``: it may still have batches left),
    then whoever ``victim`` names, until a position lies before its owner's end."""
    owner: Optional[int] = me if own_first else None
    while True:
        if owner is not None:
            position = take(owner)
            if position < ends[owner]:
                return owner, position
        owner = victim(np.maximum(ends - counters(), 0), me)
        if owner is None:
            return None


def merge_factor(mine: float, speeds: np.ndarray) -> int:
    """How many batches to take in one step: my measured rows per second over the
    slowest of all (``speeds``, mine included; 0 where not measured yet), rounded down,
    so that the noise between equal workers merges nothing; within [1, MAX_MERGE]."""
    known = speeds[speeds > 0]
    if mine <= 0 or known.size == 0:
        return 1
    return int(min(MAX_MERGE, max(1, np.floor(mine / known.min()))))
