"""Worker clocks in an RMA window on the scheduler (``ctl`` rank 0), for SSP.

Each worker publishes how many steps it has completed with an atomic ``Accumulate``
(``REPLACE``) and reads everyone's with ``Get_accumulate`` (``NO_OP``), both one-sided inside
one long ``Lock_all`` epoch. Inside a node MPI does these through shared memory; elsewhere
they may wait for the scheduler's next poll of MPI (it polls every few milliseconds).
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .waiting import wait_all

_I8 = np.dtype(np.int64).itemsize


class ClockBoard:
    """Collective over ``ctl``: the scheduler holds the clocks, workers read and write."""

    def __init__(self, ctl: MPI.Intracomm, n_workers: int) -> None:
        self.ctl, self.n = ctl, n_workers
        here = n_workers if ctl.Get_rank() == 0 else 0
        self.win = MPI.Win.Allocate(here * _I8, _I8, comm=ctl)
        self.win.Lock_all(MPI.MODE_NOCHECK)
        np.frombuffer(self.win.tomemory(), dtype=np.int64, count=here)[:] = 0
        self.win.Sync()
        wait_all([ctl.Ibarrier()])                 # zeroed before anyone reads
        self._one = np.zeros(1, dtype=np.int64)
        self._nothing = np.zeros(n_workers, dtype=np.int64)
        self._all = np.zeros(n_workers, dtype=np.int64)

    def set(self, worker: int, clock: int) -> None:
        """Publish that ``worker`` has completed ``clock`` steps."""
        self._one[0] = clock
        self.win.Accumulate([self._one, MPI.INT64_T], 0, [worker, 1, MPI.INT64_T], MPI.REPLACE)
        self.win.Flush(0)

    def read(self) -> np.ndarray:
        """Every worker's completed steps (a copy)."""
        self.win.Get_accumulate([self._nothing, MPI.INT64_T], [self._all, MPI.INT64_T], 0,
                                [0, self.n, MPI.INT64_T], MPI.NO_OP)
        self.win.Flush(0)
        return self._all.copy()

    def close(self) -> None:
        """Collective over ``ctl``: no worker reads any more; free the window."""
        wait_all([self.ctl.Ibarrier()])
        self.win.Unlock_all()
        self.win.Free()
