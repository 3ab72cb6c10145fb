"""The worker's cache of pulled rows under SSP and ASP (``--pull-cache ROWS``). Pure: no
MPI.

A row pulled from a server is kept with the server's version of its table at that pull
(its updates applied so far). Before the next pull the worker reads every server's
versions anyway (``TableClient.read_versions``); a cached row is served again while its
server has applied at most ``bound`` updates since, and pulled afresh otherwise. The
bound is the table's staleness S times the number of workers: the updates S steps of
every worker make, so a cached row is never older than an SSP(S) worker may see.

A row read from a server under SSP holds the worker's own updates (it waits for its push
to be applied); a cached row lacks those made since it was pulled, and a key of one batch
is pushed in the same step. Serving such rows regardless cost 0.02 to 0.05 AUC on the
built-in data (FM, SSP(3), measured): own updates missed add up like a delayed gradient.
So each of the worker's own pushes of a cached key ages its row by half the bound: a row
is served at most in the step after the worker's own update of it, and a row the worker
did not push lives out the bound. When the cache holds more than ``capacity`` rows, the
rows pulled longest ago go first.
"""
from __future__ import annotations

import numpy as np

from .keyrows import KeyedRows


class PullCache:
    """One table's cached rows."""

    def __init__(self, dim: int, capacity: int, bound: int) -> None:
        self.rows = KeyedRows(dim, capacity, drop_zero=False)
        self.capacity, self.bound = capacity, bound
        self.own = (bound + 1) // 2

    def lookup(self, keys: np.ndarray, versions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For unique ``keys`` whose servers' versions are now ``versions`` (one per key):
        (positions served from the cache, their pool slots)."""
        slots = self.rows.slots_of(keys)
        have = np.flatnonzero(slots >= 0)
        fresh = versions[have] - self.rows.ages_at(slots[have]) <= self.bound
        return have[fresh], slots[have[fresh]]

    def serve(self, slots: np.ndarray, positions: np.ndarray, out: np.ndarray) -> None:
        """Copy the cached rows at ``slots`` into ``out[positions]``."""
        out[positions] = self.rows.rows_at(slots)

    def keep(self, keys: np.ndarray, rows: np.ndarray, versions: np.ndarray) -> None:
        """Remember freshly pulled rows with the versions they were pulled at; past the
        capacity, forget the oldest pulls."""
        self.rows.put(keys, rows, versions)
        over = len(self.rows) - self.capacity
        if over > 0:
            self.rows.take(self.rows.oldest(over, np.empty(0, np.int64)))

    def wrote(self, keys: np.ndarray) -> None:
        """This worker pushed rows of ``keys``: their cached rows lack that update, so each
        ages by ``own`` versions."""
        self.rows.age_by(self.rows.slots_of(keys), self.own)

    def clear(self) -> None:
        """Forget everything (the placement changed: versions are another server's)."""
        self.rows.clear()


def pull_caches(rows: int, dims: list[int], staleness: list[int], rounds: bool,
                n_workers: int) -> list[PullCache | None]:
    """Each table's cache for ``--pull-cache rows`` (``staleness``: each table's bound in
    steps): none at all when the job runs in BSP rounds or ``rows`` is 0."""
    if rounds or rows <= 0:
        return [None] * len(dims)
    return [PullCache(d, rows, s * n_workers) for d, s in zip(dims, staleness)]
