"""The workers' training rows, kept in node-shared memory (``Win.Allocate_shared``).

Each worker reads (or generates) its own share once, batch by batch, before the clock
starts. After that, every worker on the same node reads any owner's batches as NumPy
views: nothing is copied, generated or parsed again. Balanced workers (``balance``) take
other workers' batches this way. A batch of an owner on another node, or of a share too
large to keep, comes from the data source instead.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from mpi4py import MPI

from .data import Batch, Source
from .data.schedule import Rows
from .waiting import wait_all
from .wire import all_ranks, allgather_json

CACHE_BYTES = 1 << 30       # the largest share of training rows a worker keeps in memory
ALIGN = 64                  # each worker's segment starts on this many bytes


def row_bytes(fields: int) -> int:
    """Bytes a kept row takes: int64 keys, float32 values, a float32 label, and a flag
    that the row is there (a text source skipping bad lines delivers fewer rows)."""
    return fields * 12 + 5


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _views(buf: memoryview | bytes, rows: int, fields: int) -> Arrays:
    """(keys, vals, labels, present) laid out one after the other in ``buf``."""
    keys = np.frombuffer(buf, np.int64, rows * fields).reshape(rows, fields)
    vals = np.frombuffer(buf, np.float32, rows * fields, rows * fields * 8).reshape(rows, fields)
    labels = np.frombuffer(buf, np.float32, rows, rows * fields * 12)
    present = np.frombuffer(buf, np.bool_, rows, rows * (fields * 12 + 4))
    return keys, vals, labels, present


class RowCache:
    """Collective over the workers (``group``): worker ``w`` keeps rows ``shares[w]``, in
    slots of ``batch_size`` rows laid out as the source cuts its batches. A batch with
    fewer rows (bad lines skipped) leaves the rest of its slot marked missing."""

    def __init__(self, group: MPI.Intracomm, source: Source, shares: Sequence[Rows],
                 batch_size: int) -> None:
        me, fields = group.Get_rank(), source.fields
        lo, hi = shares[me]
        self.shares, self.size = list(shares), batch_size
        self.kept = all_ranks(group, (hi - lo) * row_bytes(fields) <= CACHE_BYTES)
        self.arrays: dict[int, Arrays] = {}
        self.win: Optional[MPI.Win] = None
        if not self.kept:
            return
        node = group.Split_type(MPI.COMM_TYPE_SHARED)
        nbytes = -(-(hi - lo) * row_bytes(fields) // ALIGN) * ALIGN
        self.win = MPI.Win.Allocate_shared(nbytes, 1, comm=node)
        keys, vals, labels, present = _views(self.win.tomemory(), hi - lo, fields)
        present[:] = False
        for b, batch in enumerate(source.batches(lo, hi, batch_size)):
            at = slice(b * batch_size, b * batch_size + len(batch))
            keys[at], vals[at], labels[at], present[at] = \
                batch.keys, batch.vals, batch.labels, True
        owners = allgather_json(node, me)          # node rank -> worker index
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self.win.Sync()
        wait_all([node.Ibarrier()])                # every share is filled before any read
        self.win.Sync()
        for rank, owner in enumerate(owners):
            o_lo, o_hi = shares[owner]
            self.arrays[owner] = _views(self.win.Shared_query(rank)[0], o_hi - o_lo, fields)
        node.Free()

    def batch(self, owner: int, b: int) -> Optional[Batch]:
        """Batch ``b`` of ``owner``'s share as the source gives it (views, or a copy where
        rows are missing), or None where that share is not kept on this node."""
        arrays = self.arrays.get(owner)
        if arrays is None:
            return None
        at = slice(b * self.size, (b + 1) * self.size)
        keys, vals, labels, present = (a[at] for a in arrays)
        if not present.all():
            keys, vals, labels = keys[present], vals[present], labels[present]
        return Batch(keys, vals, labels)

    def free(self) -> None:
        """Collective over the workers of a node: drop the views and free the window."""
        self.arrays = {}
        if self.win is not None:
            self.win.Unlock_all()
            self.win.Free()
            self.win = None
