"""The scheduler's board, an RMA window on ``ctl`` rank 0: worker clocks (for SSP), one
control word (checkpoint requests), and for balanced workers (``balance``) each worker's
speed and each owner's batch counter.

Each worker publishes how many steps it has completed (and its speed) with an atomic
``Accumulate`` (``REPLACE``) and reads everyone's with ``Get_accumulate`` (``NO_OP``); the
control word changes only by ``Compare_and_swap``, a counter only by ``Fetch_and_op``
(``SUM``), so every batch is taken once. All are one-sided inside one long ``Lock_all``
epoch.
Inside a node MPI does these through shared memory; elsewhere they may wait for the
scheduler's next poll of MPI (it polls every few milliseconds).
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .waiting import wait_all

_I8 = np.dtype(np.int64).itemsize


class ClockBoard:
    """Collective over ``ctl``: the scheduler holds the words, everyone reads and writes."""

    def __init__(self, ctl: MPI.Intracomm, n_workers: int) -> None:
        self.ctl, self.n = ctl, n_workers
        # [clocks][control word][speeds][counters]
        here = 3 * n_workers + 1 if ctl.Get_rank() == 0 else 0
        self.win = MPI.Win.Allocate(here * _I8, _I8, comm=ctl)
        self.win.Lock_all(MPI.MODE_NOCHECK)
        np.frombuffer(self.win.tomemory(), dtype=np.int64, count=here)[:] = 0
        self.win.Sync()
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
        self._replace(self.n + 1 + worker, rows_per_s)

    def speeds(self) -> np.ndarray:
        """Every worker's published speed (0: none yet; a copy)."""
        return self._read(self.n, self.n + 1).copy()

    def set_counter(self, owner: int, position: int) -> None:
        """Set ``owner``'s batch counter (a resumed job, before any worker takes)."""
        self._replace(2 * self.n + 1 + owner, position)

    def counters(self) -> np.ndarray:
        """Every owner's batch counter: the positions taken so far (a copy)."""
        return self._read(self.n, 2 * self.n + 1).copy()

    def take(self, owner: int) -> int:
        """Take ``owner``'s next batch position (it may lie past the owner's end)."""
        self.win.Fetch_and_op([self._add, MPI.INT64_T], [self._old, MPI.INT64_T], 0,
                              2 * self.n + 1 + owner, MPI.SUM)
        self.win.Flush(0)
        return int(self._old[0])

    def control(self) -> int:
        """The control word."""
        return int(self._read(1, self.n)[0])

    def swap(self, expected: int, new: int) -> int:
        """Set the control word to ``new`` if it is ``expected``; returns its old value."""
        self._one[0], cmp = new, np.array([expected], dtype=np.int64)
        self.win.Compare_and_swap([self._one, MPI.INT64_T], [cmp, MPI.INT64_T],
                                  [self._old, MPI.INT64_T], 0, self.n)
        self.win.Flush(0)
        return int(self._old[0])

    def _replace(self, index: int, value: int) -> None:
        self._one[0] = value
        self.win.Accumulate([self._one, MPI.INT64_T], 0, [index, 1, MPI.INT64_T], MPI.REPLACE)
        self.win.Flush(0)

    def _read(self, count: int, first: int = 0) -> np.ndarray:
        self.win.Get_accumulate([self._nothing[:count], MPI.INT64_T],
                                [self._all[:count], MPI.INT64_T], 0,
                                [first, count, MPI.INT64_T], MPI.NO_OP)
        self.win.Flush(0)
        return self._all[:count]

    def close(self) -> None:
        """Collective over ``ctl``: no worker reads any more; free the window."""
        wait_all([self.ctl.Ibarrier()])
        self.win.Unlock_all()
        self.win.Free()
