"""RMA windows over ``ps``: the memory that servers serve and workers read one-sidedly.

Each table's shards live in one window: ``capacity`` rows of a server's window memory
(``MPI.Win.Allocate``, or ``Allocate_shared`` when all ranks share a node), nothing on a
worker. Every rank keeps one passive epoch (``Lock_all``) open for the window's life: workers
read in it, servers call ``Sync`` in it after writing. A small second window holds each
server's table versions. Creating and freeing windows is collective over ``ps``; both the
servers' store and the workers' client build theirs here.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mpi4py import MPI

from .codecs import RAW, row_bytes
from .errors import ConfigError, MpipsError
from .waiting import wait_all
from .wire import all_ranks

_F4 = np.dtype(np.float32).itemsize


class ShardWindow:
    """One table's window (collective over ``ps``): this rank's ``capacity`` x ``dim``
    float32 rows as ``shard``; after ``attach_views``, every server's rows as NumPy arrays
    (a reader of shared memory). A coded mirror (``MIRROR``) holds ``dim`` bytes a row."""

    def __init__(self, ps: MPI.Intracomm, dim: int, capacity: int, shared: bool,
                 kind: tuple[np.dtype, MPI.Datatype] | None = None) -> None:
        allocate = MPI.Win.Allocate_shared if shared else MPI.Win.Allocate
        self.dim = dim
        self.dtype, mpi_type = kind or (np.dtype(np.float32), MPI.FLOAT)
        size = self.dtype.itemsize
        self.win = allocate(capacity * dim * size, size, comm=ps)
        self.shard = np.frombuffer(self.win.tomemory(), dtype=self.dtype,
                                   count=capacity * dim).reshape(capacity, dim)
        self.views: list[np.ndarray] = []
        self.mpi_type = mpi_type
        self.rowtype = mpi_type.Create_contiguous(dim).Commit()
        self.win.Lock_all(MPI.MODE_NOCHECK)

    @property
    def unified(self) -> bool:
        """Public and private copies are one memory (needed for direct loads)."""
        return self.win.model == MPI.WIN_UNIFIED

    def attach_views(self, n_servers: int) -> None:
        """Map every server's rows (a local call; the window is in shared memory)."""
        self.views = [np.frombuffer(self.win.Shared_query(s)[0], dtype=self.dtype)
                      .reshape(-1, self.dim) for s in range(n_servers)]

    def free(self) -> None:
        """Close the epoch and free the window (collective over ``ps``)."""
        self.win.Unlock_all()
        self.rowtype.Free()
        self.shard = np.empty((0, self.dim), self.dtype)
        self.views = []
        self.win.Free()


MIRROR = (np.dtype(np.uint8), MPI.BYTE)      # a coded mirror's window: bytes


class VersionWindow:
    """Per server and table, the number of updates applied so far (the version): servers
    publish theirs with atomic writes, workers read every server's just before a pull, so
    the rows pulled are at least that new (collective over ``ps``)."""

    def __init__(self, ps: MPI.Intracomm, n_tables: int, server: int | None, shared: bool,
                 n_servers: int) -> None:
        """``server``: this rank's server index, None on a worker."""
        self.n_tables, self.n_servers, self.server = n_tables, n_servers, server
        n = n_tables if server is not None else 0
        allocate = MPI.Win.Allocate_shared if shared else MPI.Win.Allocate
        self.win = allocate(n * 8, 8, comm=ps)
        self.mine = np.frombuffer(self.win.tomemory(), dtype=np.int64, count=n)
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self._views: list[np.ndarray] = []
        self._nothing = np.zeros(n_tables, dtype=np.int64)
        if server is not None:
            self.publish(np.zeros(n_tables, dtype=np.int64))

    @property
    def unified(self) -> bool:
        return self.win.model == MPI.WIN_UNIFIED

    def attach_views(self) -> None:
        """Read every server's versions with loads (shared memory, unified model)."""
        self._views = [np.frombuffer(self.win.Shared_query(s)[0], np.int64,
                                     count=self.n_tables) for s in range(self.n_servers)]

    def publish(self, versions: np.ndarray) -> None:
        """A server sets all its versions at once (one atomic write, element by element,
        to its own window)."""
        me = self.server
        self.win.Accumulate([np.ascontiguousarray(versions, np.int64), MPI.INT64_T], me,
                            [0, self.n_tables, MPI.INT64_T], MPI.REPLACE)
        self.win.Flush(me)

    def read(self) -> np.ndarray:
        """(servers, tables) versions: loads of shared memory, else atomic reads."""
        out = np.empty((self.n_servers, self.n_tables), dtype=np.int64)
        if self._views:
            self.win.Sync()
            for s, view in enumerate(self._views):
                out[s] = view
            return out
        for s in range(self.n_servers):
            self.win.Get_accumulate([self._nothing, MPI.INT64_T], [out[s], MPI.INT64_T], s,
                                    [0, self.n_tables, MPI.INT64_T], MPI.NO_OP)
        self.win.Flush_all()
        return out

    def free(self) -> None:
        """Collective over ``ps``."""
        self.win.Unlock_all()
        self._views = []
        self.win.Free()


def all_on_one_node(comm: MPI.Intracomm) -> bool:
    """Collective: do all ranks of ``comm`` share one node (shared memory)?"""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    same = node.Get_size() == comm.Get_size()
    node.Free()
    return all_ranks(comm, same)


def shared_memory(ps: MPI.Intracomm, pull: str) -> bool:
    """Collective: whether windows go into node-shared memory, by ``--pull`` (``direct``
    needs one node; ``auto`` uses it where all ranks share one)."""
    one_node = all_on_one_node(ps)
    if pull == "direct" and not one_node:
        raise ConfigError("--pull direct needs all servers and workers on one node")
    return pull == "direct" or (pull == "auto" and one_node)


def direct_loads(ps: MPI.Intracomm, pull: str, windows: Sequence[VersionWindow | ShardWindow]
                 ) -> bool:
    """Collective: may workers read shards with plain loads? Only with the unified memory
    model on every rank (public and private window copies are one)."""
    unified = all_ranks(ps, all(w.unified for w in windows))
    if pull == "direct" and not unified:
        raise ConfigError("--pull direct needs an MPI with the unified RMA memory model")
    return unified


class JobWindows:
    """This rank's window of every table and the versions window (collective over
    ``ps``): a server's hold ``capacity`` rows of each table, a worker's none. Workers of
    one node read shared memory with plain loads where the memory model allows
    (``direct``), else with one-sided ``Get``. A table with a pull codec (``codecs``,
    ``codecs.PULL_CHOICES``) has a second window, its coded mirror (``mirrors``), of
    ``row_bytes`` bytes a row; the others None."""

    def __init__(self, ps: MPI.Intracomm, names: Sequence[str], dims: Sequence[int],
                 capacity: Sequence[int], server: int | None, n_servers: int,
                 pull: str, codecs: Sequence[int] | None = None) -> None:
        self.ps, self.names, self.dims, self.server = ps, list(names), list(dims), server
        self.n_servers = n_servers
        self.codecs = list(codecs or [RAW] * len(self.dims))
        self.shared = shared_memory(ps, pull)
        self.direct = False              # known once the windows exist (memory model)
        self.versions = VersionWindow(ps, len(self.dims), server, self.shared, n_servers)
        self.tables = [self._allocate(i, int(c)) for i, c in enumerate(capacity)]
        self.mirrors = [self._mirror(i, int(c)) for i, c in enumerate(capacity)]
        self.direct = self.shared and direct_loads(ps, pull, [self.versions, *self.tables])
        if self.direct and server is None:
            self.versions.attach_views()
            for w in self.tables + [m for m in self.mirrors if m is not None]:
                w.attach_views(n_servers)

    def _allocate(self, table: int, rows: int, mirror: bool = False) -> ShardWindow:
        width = row_bytes(self.codecs[table], self.dims[table]) if mirror else self.dims[table]
        try:
            window = ShardWindow(self.ps, width, rows, self.shared, MIRROR if mirror else None)
        except (MemoryError, MPI.Exception) as exc:
            gib = rows * width * (1 if mirror else _F4) / 2**30
            raise MpipsError(f"server {self.server}: cannot allocate {gib:.1f} GiB for "
                             f"table {self.names[table]!r} ({rows:,} rows"
                             f"{', coded mirror' if mirror else ''}): {exc}") from None
        if self.direct and self.server is None:
            window.attach_views(self.n_servers)
        return window

    def _mirror(self, table: int, rows: int) -> ShardWindow | None:
        """Table ``table``'s coded mirror (None: pulls read its float32 rows)."""
        return self._allocate(table, rows, True) if self.codecs[table] != RAW else None

    def reallocate(self, tables: Sequence[int], capacity: Sequence[int]) -> list[ShardWindow]:
        """Collective: new windows of ``capacity`` rows (this rank's) for ``tables``;
        returns the old ones, still open, for ``release`` once their rows are copied.
        Their coded mirrors are derived state: they are replaced at once, empty (the
        server codes them afresh from the rows)."""
        self.barrier()
        old = [self.tables[i] for i in tables]
        for i, rows in zip(tables, capacity):
            self.tables[i] = self._allocate(i, int(rows))
            if self.mirrors[i] is not None:
                self.mirrors[i].free()
                self.mirrors[i] = self._mirror(i, int(rows))
        return old

    def release(self, old: Sequence[ShardWindow]) -> None:
        """Collective: free windows that ``reallocate`` replaced."""
        self.barrier()
        for w in old:
            w.free()

    def barrier(self) -> None:
        """Collective over ``ps``, waiting politely."""
        wait_all([self.ps.Ibarrier()])

    def free(self) -> None:
        """Collective: wait until no rank reads any more, then free every window."""
        self.barrier()
        for w in self.tables + [m for m in self.mirrors if m is not None]:
            w.free()
        self.versions.free()

