"""The scheduler's board on ``ctl``: worker clocks (for SSP), the control word of
requested pauses, and for balanced workers (``balance``) each worker's speed and each
owner's batch counter.

Clocks, speeds and counters live in an RMA window on ``ctl`` rank 0. Each worker publishes
how many steps it has completed (and its speed) with an atomic ``Accumulate``
(``REPLACE``) and reads everyone's with ``Get_accumulate`` (``NO_OP``); a counter changes
only by ``Fetch_and_op`` (``SUM``), so every batch is taken once. All are one-sided inside
one long ``Lock_all`` epoch. Inside a node MPI does these through shared memory;
elsewhere they may wait for the scheduler's next poll of MPI (every few milliseconds).

The control word is read by every worker before every step, so it must cost nothing
across nodes: the scheduler's copy is the one that decides (it changes only by
``Compare_and_swap``), and every worker keeps its own copy in its own window memory, which
it reads with a plain load. Whoever changes the scheduler's copy writes the new value into
every worker's copy and waits until all writes have landed; a worker that sees a request
in its copy asks the scheduler's copy for the truth.
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .topology import SCHEDULER_RANK
from .waiting import wait_all

_I8 = np.dtype(np.int64).itemsize
REQUESTED = -1       # the control word: a pause is wanted, no step named yet


class ClockBoard:
    """Collective over ``ctl``: the scheduler holds the words, everyone reads and writes."""

    def __init__(self, ctl: MPI.Intracomm, n_workers: int) -> None:
        self.ctl, self.n = ctl, n_workers
        # [clocks][control word][speeds][counters]: the words where each part starts.
        self.control_at, self.speeds_at = n_workers, n_workers + 1
        self.counters_at = 2 * n_workers + 1
        here = 3 * n_workers + 1 if ctl.Get_rank() == 0 else 0
        self.win = MPI.Win.Allocate(here * _I8, _I8, comm=ctl)
        self.win.Lock_all(MPI.MODE_NOCHECK)
        np.frombuffer(self.win.tomemory(), dtype=np.int64, count=here)[:] = 0
        self.win.Sync()
        # Every rank's own copy of the control word (the scheduler's is not read).
        self.copies = MPI.Win.Allocate(_I8, _I8, comm=ctl)
        self.copies.Lock_all(MPI.MODE_NOCHECK)
        self._copy = np.frombuffer(self.copies.tomemory(), dtype=np.int64, count=1)
        self._copy[:] = 0
        self.copies.Sync()
        wait_all([ctl.Ibarrier()])                 # zeroed before anyone reads
        self._one = np.zeros(1, dtype=np.int64)
        self._old = np.zeros(1, dtype=np.int64)
        self._nothing = np.zeros(n_workers, dtype=np.int64)
        self._all = np.zeros(n_workers, dtype=np.int64)
        self._add = np.ones(1, dtype=np.int64)

    def set(self, worker: int, clock: int) -> None:
        """Publish that ``worker`` has completed ``clock`` steps."""
        self._replace(worker, clock)

    def read(self) -> np.ndarray:
        """Every worker's completed steps (a copy)."""
        return self._read(self.n).copy()

    def set_speed(self, worker: int, rows_per_s: int) -> None:
        """Publish how fast ``worker`` trains (rows per second)."""
        self._replace(self.speeds_at + worker, rows_per_s)

    def speeds(self) -> np.ndarray:
        """Every worker's published speed (0: none yet; a copy)."""
        return self._read(self.n, self.speeds_at).copy()

    def set_counter(self, owner: int, position: int) -> None:
        """Set ``owner``'s batch counter (a resumed job, before any worker takes)."""
        self._replace(self.counters_at + owner, position)

    def counters(self) -> np.ndarray:
        """Every owner's batch counter: the positions taken so far (a copy)."""
        return self._read(self.n, self.counters_at).copy()

    def held_counters(self) -> np.ndarray:
        """Scheduler: every owner's batch counter, read from its own memory (no MPI call:
        after ranks died, when nobody takes any more)."""
        words = np.frombuffer(self.win.tomemory(), dtype=np.int64,
                              count=self.counters_at + self.n)
        return words[self.counters_at:].copy()

    def take(self, owner: int) -> int:
        """Take ``owner``'s next batch position (it may lie past the owner's end)."""
        self.win.Fetch_and_op([self._add, MPI.INT64_T], [self._old, MPI.INT64_T],
                              SCHEDULER_RANK,
                              self.counters_at + owner, MPI.SUM)
        self.win.Flush(SCHEDULER_RANK)
        return int(self._old[0])

    def control(self) -> int:
        """This worker's copy of the control word: a plain load of its own memory."""
        self.copies.Sync()
        return int(self._copy[0])

    def request(self) -> None:
        """Scheduler: ask for a pause, unless one is already asked for or named."""
        if self._swap(0, REQUESTED) == 0:
            self._spread(REQUESTED)

    def clear(self) -> None:
        """Scheduler: the pause is over (every worker is stopped, none reads)."""
        self._replace(self.control_at, 0)
        self._spread(0)

    def name(self, step: int) -> int:
        """A worker that saw a request: name ``step`` as the pause if no other worker has
        named one yet; returns the step named (this one, or the earlier one)."""
        old = self._swap(REQUESTED, step)
        named = step if old == REQUESTED else old
        if old == REQUESTED:
            self._spread(step)
        return named

    def _swap(self, expected: int, new: int) -> int:
        """Compare-and-swap on the scheduler's copy; returns its old value."""
        self._one[0], cmp = new, np.array([expected], dtype=np.int64)
        self.win.Compare_and_swap([self._one, MPI.INT64_T], [cmp, MPI.INT64_T],
                                  [self._old, MPI.INT64_T], SCHEDULER_RANK, self.control_at)
        self.win.Flush(SCHEDULER_RANK)
        return int(self._old[0])

    def _spread(self, value: int) -> None:
        """Write ``value`` into every worker's copy and wait until all have landed."""
        word = np.array([value], dtype=np.int64)
        for rank in range(1, self.ctl.Get_size()):
            self.copies.Accumulate([word, MPI.INT64_T], rank, [0, 1, MPI.INT64_T],
                                   MPI.REPLACE)
        self.copies.Flush_all()

    def _replace(self, index: int, value: int) -> None:
        self._one[0] = value
        self.win.Accumulate([self._one, MPI.INT64_T], SCHEDULER_RANK, [index, 1, MPI.INT64_T],
                            MPI.REPLACE)
        self.win.Flush(SCHEDULER_RANK)

    def _read(self, count: int, first: int = 0) -> np.ndarray:
        self.win.Get_accumulate([self._nothing[:count], MPI.INT64_T],
                                [self._all[:count], MPI.INT64_T], SCHEDULER_RANK,
                                [first, count, MPI.INT64_T], MPI.NO_OP)
        self.win.Flush(SCHEDULER_RANK)
        return self._all[:count]

    def close(self) -> None:
        """Collective over ``ctl``: no worker reads any more; free the windows."""
        wait_all([self.ctl.Ibarrier()])
        for win in (self.win, self.copies):
            win.Unlock_all()
            win.Free()
