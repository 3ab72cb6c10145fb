"""Parameter tables sharded over the servers in MPI RMA windows.

Servers keep their shard of every table in window memory (``MPI.Win.Allocate``, or
``Allocate_shared`` when all ranks share a node) with the optimiser state beside it.
Workers pull one-sidedly: inside one ``Lock_all`` epoch opened at start they either read
the shards of same-node servers directly (``direct``) or issue one ``Get`` per server with
an indexed datatype, completed by ``Flush`` (``get``). No server CPU is needed for a pull.
Pushes are messages: each worker sends every server the gradient rows it owns, and the
server sums all workers' rows in worker order before one optimiser update (``apply``), so
the result does not depend on arrival order or on the number of servers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from mpi4py import MPI

from .clocks import StalenessLog
from .errors import ConfigError, MpipsError
from .kernels.sparse import accumulate_rows, gather_scatter_rows, release_slots, scatter_rows
from .models import TableSpec
from .optim import Optimizer
from .ring import PartitionMap, Route, TableLayout, name_salt, route
from .topology import SERVER, Roles
from .waiting import wait_all
from .wire import all_ranks

TAG_PUSH, TAG_PUSH_ROWS, TAG_ACK = 11, 12, 13
FLAG_LAST = 1        # the worker's final push: it sends nothing more
FLAG_MARK = 2        # no rows: the worker stopped for the checkpoint labelled ``step``
_F4 = np.dtype(np.float32).itemsize


@dataclass
class Push:
    """One worker's gradient rows for one server: per table, shard offsets and rows."""

    worker: int
    step: int
    flags: int
    offsets: list[np.ndarray]
    grads: list[np.ndarray]
    versions: np.ndarray          # per table: this server's version the rows were pulled at

    @property
    def last(self) -> bool:
        return bool(self.flags & FLAG_LAST)

    @property
    def mark(self) -> bool:
        return bool(self.flags & FLAG_MARK)


@dataclass
class PushHandle:
    """A push in flight: ``wait()`` returns once every server has applied it."""

    acks: list[MPI.Request]
    buffers: list[np.ndarray]

    def wait(self) -> None:
        wait_all(self.acks)


def shard_bytes(spec: TableSpec, rows: int, optimizer: Optimizer) -> int:
    """Bytes a server needs for ``rows`` rows of ``spec``: values, state, step slots."""
    return rows * (spec.dim * _F4 * (1 + len(optimizer.state_slots)) + 4)


class Table:
    """One table on this rank: its layout, window and (on servers) shard and state."""

    def __init__(self, spec: TableSpec, layout: TableLayout, roles: Roles, shared: bool,
                 optimizer: Optimizer) -> None:
        self.spec, self.layout = spec, layout
        n_rows = int(layout.shard_rows[roles.index]) if roles.role == SERVER else 0
        nbytes = n_rows * spec.dim * _F4
        allocate = MPI.Win.Allocate_shared if shared else MPI.Win.Allocate
        try:
            self.win = allocate(nbytes, _F4, comm=roles.ps)
            self.state = optimizer.new_state((n_rows, spec.dim)) if roles.role == SERVER else {}
            # Per shard row: its index among this step's summed rows, or -1 (see apply).
            self.slot = np.full(n_rows, -1, dtype=np.int32)
        except (MemoryError, MPI.Exception) as exc:
            gib = shard_bytes(spec, n_rows, optimizer) / 2**30
            raise MpipsError(f"server {roles.index}: cannot allocate {gib:.1f} GiB for table "
                             f"{spec.name!r} ({n_rows:,} rows): {exc}") from None
        self.shard = np.frombuffer(self.win.tomemory(), dtype=np.float32,
                                   count=n_rows * spec.dim).reshape(n_rows, spec.dim)
        self.views: list[np.ndarray] = []
        if shared and roles.role != SERVER:
            for s in range(roles.n_servers):
                buf, _ = self.win.Shared_query(s)
                rows = int(layout.shard_rows[s])
                self.views.append(np.frombuffer(buf, dtype=np.float32,
                                                count=rows * spec.dim).reshape(rows, spec.dim))
        self.rowtype = MPI.FLOAT.Create_contiguous(spec.dim).Commit()
        # Every rank keeps one passive epoch open: workers read in it, servers call
        # ``Sync`` in it after writing, so the stores are visible before the acks go out.
        self.win.Lock_all(MPI.MODE_NOCHECK)

    def free(self) -> None:
        """Close the epoch and free the window (collective over ``ps``)."""
        self.win.Unlock_all()
        self.rowtype.Free()
        self.shard = np.empty((0, self.spec.dim), np.float32)
        self.views = []
        self.win.Free()


def _all_on_one_node(comm: MPI.Intracomm) -> bool:
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    same = node.Get_size() == comm.Get_size()
    node.Free()
    return all_ranks(comm, same)


class Tables:
    """All tables of a job, seen from one rank of the ``ps`` communicator (collective).

    Use as a context manager: leaving the block waits until no worker reads any more and
    frees the windows on every rank of ``ps``.
    """

    def __init__(self, specs: Sequence[TableSpec], roles: Roles, optimizer: Optimizer,
                 pmap: PartitionMap | None = None, pull: str = "auto") -> None:
        self.roles, self.optimizer = roles, optimizer
        self.pmap = pmap or PartitionMap.ring(roles.n_servers)
        one_node = _all_on_one_node(roles.ps)
        if pull == "direct" and not one_node:
            raise ConfigError("--pull direct needs all servers and workers on one node")
        shared = pull == "direct" or (pull == "auto" and one_node)
        self.tables = {s.name: Table(s, TableLayout.build(s.rows, name_salt(s.name), self.pmap),
                                     roles, shared, optimizer) for s in specs}
        self.names = [s.name for s in specs]
        # Direct loads need the unified memory model (public and private copies are one).
        unified = all(t.win.model == MPI.WIN_UNIFIED for t in self.tables.values())
        unified = all_ranks(roles.ps, unified)
        if pull == "direct" and not unified:
            raise ConfigError("--pull direct needs an MPI with the unified RMA memory model")
        self.direct = shared and unified
        self._sending: list[tuple[list[MPI.Request], list[np.ndarray]]] = []
        self._open_versions(shared)

    def _open_versions(self, shared: bool) -> None:
        """Per server and table, the number of updates applied so far (the version), in a
        small window: workers read it with their pulls, and servers measure staleness."""
        roles, T = self.roles, len(self.names)
        n = T if roles.role == SERVER else 0
        allocate = MPI.Win.Allocate_shared if shared else MPI.Win.Allocate
        self.version_win = allocate(n * 8, 8, comm=roles.ps)
        self.versions = np.frombuffer(self.version_win.tomemory(), dtype=np.int64, count=n)
        self.version_win.Lock_all(MPI.MODE_NOCHECK)
        if roles.role == SERVER:
            for i in range(T):
                self._set_version(i, 0)
        self._version_views = [np.frombuffer(self.version_win.Shared_query(s)[0], np.int64,
                                             count=T)
                               for s in range(roles.n_servers)] \
            if self.direct and roles.role != SERVER else []

    def __enter__(self) -> "Tables":
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is None:             # after an error the job aborts: no collectives then
            self.close()

    def ready(self) -> None:
        """Collective: servers have written their initial shards; workers may pull."""
        if self.roles.role == SERVER:
            for t in self.tables.values():
                t.win.Sync()
        wait_all([self.roles.ps.Ibarrier()])

    def _set_version(self, table: int, value: int) -> None:
        """A server publishes a table's version with an atomic write to its own window."""
        me = self.roles.index
        self.version_win.Accumulate([np.array([value], np.int64), MPI.INT64_T], me,
                                    [table, 1, MPI.INT64_T], MPI.REPLACE)
        self.version_win.Flush(me)

    # ---- worker side -------------------------------------------------------------------
    def read_versions(self) -> np.ndarray:
        """(servers, tables) versions, read one-sidedly just before a pull, so the rows
        pulled are at least this new: direct loads of shared memory, else atomic reads."""
        T = len(self.names)
        out = np.empty((self.roles.n_servers, T), dtype=np.int64)
        if self._version_views:
            self.version_win.Sync()
            for s, view in enumerate(self._version_views):
                out[s] = view
        else:
            nothing = np.zeros(T, dtype=np.int64)
            for s in range(self.roles.n_servers):
                self.version_win.Get_accumulate([nothing, MPI.INT64_T], [out[s], MPI.INT64_T],
                                                s, [0, T, MPI.INT64_T], MPI.NO_OP)
            self.version_win.Flush_all()
        return out

    def route(self, name: str, keys: np.ndarray) -> Route:
        """Group a lookup's unique keys by server, once per step for both pull and push."""
        return route(self.tables[name].layout, keys)

    def pull(self, name: str, where: Route, out: np.ndarray) -> None:
        """Fill ``out`` (one row per routed key, request order) from the servers' shards."""
        t = self.tables[name]
        if self.direct:
            t.win.Sync()
            for s in range(self.roles.n_servers):
                if where.bounds[s + 1] > where.bounds[s]:
                    gather_scatter_rows(t.views[s], where.rows_on(s), where.positions(s), out)
            return
        tmp = np.empty_like(out)
        types = []
        for s in range(self.roles.n_servers):
            lo, hi = where.bounds[s], where.bounds[s + 1]
            if hi > lo:
                # A list converts to MPI displacements 3x faster than an int64 array.
                dt = t.rowtype.Create_indexed_block(1, where.rows_on(s).tolist()).Commit()
                t.win.Get([tmp[lo:hi], MPI.FLOAT], s, [0, 1, dt])
                types.append(dt)
        t.win.Flush_all()
        for dt in types:
            dt.Free()
        scatter_rows(tmp, where.order, out)

    def push(self, step: int, flags: int, grads: dict[str, tuple[Route, np.ndarray]],
             versions: np.ndarray) -> PushHandle:
        """Send every server its rows of the gradients: a header with the row counts, then
        per table the shard offsets and the rows, as views (no packing copies). The handle
        waits for every server's acknowledgement that the step is applied. ``versions`` are
        what ``read_versions`` gave before the pull these gradients come from."""
        n_servers, ps = self.roles.n_servers, self.roles.ps
        acks = np.zeros((n_servers, 1), dtype=np.int64)
        handle = PushHandle([ps.Irecv(acks[s], s, TAG_ACK) for s in range(n_servers)], [acks])
        reqs: list[MPI.Request] = []
        routes = [grads[n][0] for n in self.names]
        rows = [r.sort(grads[n][1]) for r, n in zip(routes, self.names)]
        for s in range(n_servers):
            counts = [int(r.bounds[s + 1] - r.bounds[s]) for r in routes]
            head = np.array([step, flags, *counts, *versions[s]], dtype=np.int64)
            reqs.append(ps.Isend(head, s, TAG_PUSH))
            handle.buffers.append(head)
            for r, g in zip(routes, rows):
                lo, hi = r.bounds[s], r.bounds[s + 1]
                reqs += [ps.Isend(r.offsets[lo:hi], s, TAG_PUSH_ROWS),
                         ps.Isend(g[lo:hi], s, TAG_PUSH_ROWS)]
                handle.buffers += [r.offsets, g]
        self._retire([(reqs, handle.buffers)])
        return handle

    def mark(self, step: int) -> None:
        """Tell every server that this worker stopped for the checkpoint named ``step``
        (after its pushes: a server sees them first)."""
        head = np.zeros(2 + 2 * len(self.names), dtype=np.int64)
        head[:2] = step, FLAG_MARK
        reqs = [self.roles.ps.Isend(head, s, TAG_PUSH) for s in range(self.roles.n_servers)]
        self._retire([(reqs, [head])])

    def _retire(self, new: list[tuple[list[MPI.Request], list[np.ndarray]]]) -> None:
        """Keep send buffers alive until their sends complete."""
        self._sending = [(r, b) for r, b in self._sending + new if not MPI.Request.Testall(r)]

    # ---- server side -------------------------------------------------------------------
    def poll_push(self) -> Push | None:
        """Receive one worker's push if one has arrived, else None (never blocks long)."""
        status = MPI.Status()
        ps = self.roles.ps
        if not ps.Iprobe(MPI.ANY_SOURCE, TAG_PUSH, status):
            return None
        source = status.Get_source()
        T = len(self.names)
        head = np.empty(2 + 2 * T, dtype=np.int64)
        ps.Recv(head, source, TAG_PUSH)
        offsets, grads = [], []
        rows = [] if head[1] & FLAG_MARK else zip(self.names, head[2:2 + T])  # a marker
        for name, n in rows:
            offsets.append(np.empty(n, dtype=np.int64))
            grads.append(np.empty((n, self.tables[name].spec.dim), dtype=np.float32))
            ps.Recv(offsets[-1], source, TAG_PUSH_ROWS)
            ps.Recv(grads[-1], source, TAG_PUSH_ROWS)
        return Push(source - self.roles.n_servers, int(head[0]), int(head[1]), offsets, grads,
                    head[2 + T:].copy())

    def apply(self, pushes: Sequence[Push], tables: Sequence[int] | None = None,
              log: StalenessLog | None = None, step: int | None = None) -> None:
        """Sum the pushes' rows in the given (worker) order, then one optimiser update per
        table (all, or the indices in ``tables``). Each push's staleness -- the updates
        applied since its rows were pulled -- goes to ``log``; then the version advances.
        ``step`` (1-based, for Adam) is the BSP round; by default the pushes' own step."""
        for i in range(len(self.names)) if tables is None else tables:
            t = self.tables[self.names[i]]
            total = sum(p.offsets[i].size for p in pushes)
            if total == 0:
                continue
            if log is not None:
                for p in pushes:
                    if p.offsets[i].size:
                        log.record(i, int(self.versions[i] - p.versions[i]))
            touched = np.empty(total, dtype=np.int64)
            acc = np.empty((total, t.spec.dim), dtype=np.float32)
            n = 0
            for p in pushes:
                n = accumulate_rows(t.slot, p.offsets[i], p.grads[i], touched, acc, n)
            release_slots(t.slot, touched[:n])
            self.optimizer.apply(t.shard, t.state, touched[:n], acc[:n],
                                 step if step is not None else max(p.step for p in pushes) + 1)
            t.win.Sync()
            self._set_version(i, int(self.versions[i]) + 1)

    def warm_up(self) -> None:
        """Server: load the numba kernels of ``apply`` (empty calls, no rows change)
        before the clock starts, not during the first push."""
        for t in self.tables.values():
            none = np.empty(0, dtype=np.int64)
            grads = np.empty((0, t.spec.dim), dtype=np.float32)
            accumulate_rows(t.slot, none, grads, none.copy(), grads.copy(), 0)
            release_slots(t.slot, none)
            self.optimizer.apply(t.shard, t.state, none, grads, 1)

    def set_versions(self, versions: np.ndarray) -> None:
        """Publish restored table versions (after loading a checkpoint)."""
        for i, v in enumerate(versions):
            self._set_version(i, int(v))

    def ack(self, pushes: Sequence[Push]) -> None:
        """Tell each pushing worker that its step is applied (after ``apply``)."""
        steps = [np.array([p.step], dtype=np.int64) for p in pushes]
        reqs = [self.roles.ps.Isend(a, self.roles.worker_ps_rank(p.worker), TAG_ACK)
                for a, p in zip(steps, pushes)]
        self._retire([(reqs, steps)])

    def close(self) -> None:
        """Collective over ``ps``: finish sends, wait for every rank, free the windows."""
        for reqs, _ in self._sending:
            wait_all(reqs)
        self._sending = []
        wait_all([self.roles.ps.Ibarrier()])   # no window is freed while a worker reads
        for t in self.tables.values():
            t.free()
        self.version_win.Unlock_all()
        self._version_views = []
        self.version_win.Free()
