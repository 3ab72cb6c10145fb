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

from .errors import ConfigError
from .kernels.sparse import accumulate_rows, gather_scatter_rows, release_slots, scatter_rows
from .models import TableSpec
from .optim import Optimizer
from .ring import PartitionMap, Route, TableLayout, name_salt, route
from .topology import SERVER, Roles

TAG_PUSH, TAG_PUSH_ROWS, TAG_ACK = 11, 12, 13
FLAG_LAST = 1        # the worker's final push: it sends nothing more
_F4 = np.dtype(np.float32).itemsize


@dataclass
class Push:
    """One worker's gradient rows for one server: per table, shard offsets and rows."""

    worker: int
    step: int
    flags: int
    offsets: list[np.ndarray]
    grads: list[np.ndarray]


class Table:
    """One table on this rank: its layout, window and (on servers) shard and state."""

    def __init__(self, spec: TableSpec, layout: TableLayout, roles: Roles, shared: bool,
                 optimizer: Optimizer) -> None:
        self.spec, self.layout = spec, layout
        n_rows = int(layout.shard_rows[roles.index]) if roles.role == SERVER else 0
        nbytes = n_rows * spec.dim * _F4
        allocate = MPI.Win.Allocate_shared if shared else MPI.Win.Allocate
        self.win = allocate(nbytes, _F4, comm=roles.ps)
        self.shard = np.frombuffer(self.win.tomemory(), dtype=np.float32,
                                   count=n_rows * spec.dim).reshape(n_rows, spec.dim)
        self.state = optimizer.new_state(self.shard.shape) if roles.role == SERVER else {}
        # Per shard row: its index among this step's summed rows, or -1 (see apply).
        self.slot = np.full(n_rows, -1, dtype=np.int32)
        self.views: list[np.ndarray] = []
        if shared and roles.role != SERVER:
            for s in range(roles.n_servers):
                buf, _ = self.win.Shared_query(s)
                rows = int(layout.shard_rows[s])
                self.views.append(np.frombuffer(buf, dtype=np.float32,
                                                count=rows * spec.dim).reshape(rows, spec.dim))
        self.rowtype = MPI.FLOAT.Create_contiguous(spec.dim).Commit()

    def free(self) -> None:
        self.rowtype.Free()
        self.shard = np.empty((0, self.spec.dim), np.float32)
        self.views = []
        self.win.Free()


def _all_on_one_node(comm: MPI.Intracomm) -> bool:
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    same = node.Get_size() == comm.Get_size()
    node.Free()
    return bool(comm.allreduce(same, op=MPI.LAND))


class Tables:
    """All tables of a job, seen from one rank of the ``ps`` communicator (collective)."""

    def __init__(self, specs: Sequence[TableSpec], roles: Roles, optimizer: Optimizer,
                 pmap: PartitionMap | None = None, pull: str = "auto") -> None:
        self.roles, self.optimizer = roles, optimizer
        self.pmap = pmap or PartitionMap.ring(roles.n_servers)
        one_node = _all_on_one_node(roles.ps)
        if pull == "direct" and not one_node:
            raise ConfigError("--pull direct needs all servers and workers on one node")
        self.direct = pull == "direct" or (pull == "auto" and one_node)
        self.tables = {s.name: Table(s, TableLayout.build(s.rows, name_salt(s.name), self.pmap),
                                     roles, self.direct, optimizer) for s in specs}
        self.names = [s.name for s in specs]
        self._sending: list[tuple[list[MPI.Request], list[np.ndarray]]] = []
        if roles.role != SERVER:
            for t in self.tables.values():
                t.win.Lock_all(MPI.MODE_NOCHECK)

    # ---- worker side -------------------------------------------------------------------
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

    def push(self, step: int, flags: int, grads: dict[str, tuple[Route, np.ndarray]]
             ) -> list[MPI.Request]:
        """Send every server its rows of the gradients: a header with the row counts, then
        per table the shard offsets and the rows, as views (no packing copies)."""
        reqs: list[MPI.Request] = []
        keep: list[np.ndarray] = []
        routes = [grads[n][0] for n in self.names]
        rows = [r.sort(grads[n][1]) for r, n in zip(routes, self.names)]
        ps = self.roles.ps
        for s in range(self.roles.n_servers):
            counts = [int(r.bounds[s + 1] - r.bounds[s]) for r in routes]
            head = np.array([step, flags, *counts], dtype=np.int64)
            reqs.append(ps.Isend(head, s, TAG_PUSH))
            keep.append(head)
            for r, g in zip(routes, rows):
                lo, hi = r.bounds[s], r.bounds[s + 1]
                reqs += [ps.Isend(r.offsets[lo:hi], s, TAG_PUSH_ROWS),
                         ps.Isend(g[lo:hi], s, TAG_PUSH_ROWS)]
                keep += [r.offsets, g]
        self._sending.append((reqs, keep))
        self._sending = [(r, b) for r, b in self._sending if not MPI.Request.Testall(r)]
        return reqs

    # ---- server side -------------------------------------------------------------------
    def poll_push(self) -> Push | None:
        """Receive one worker's push if one has arrived, else None (never blocks long)."""
        status = MPI.Status()
        ps = self.roles.ps
        if not ps.Iprobe(MPI.ANY_SOURCE, TAG_PUSH, status):
            return None
        source = status.Get_source()
        head = np.empty(2 + len(self.names), dtype=np.int64)
        ps.Recv(head, source, TAG_PUSH)
        offsets, grads = [], []
        for name, n in zip(self.names, head[2:]):
            offsets.append(np.empty(n, dtype=np.int64))
            grads.append(np.empty((n, self.tables[name].spec.dim), dtype=np.float32))
            ps.Recv(offsets[-1], source, TAG_PUSH_ROWS)
            ps.Recv(grads[-1], source, TAG_PUSH_ROWS)
        return Push(source - self.roles.n_servers, int(head[0]), int(head[1]), offsets, grads)

    def apply(self, pushes: Sequence[Push]) -> None:
        """Sum the pushes' rows in the given (worker) order, then one optimiser update."""
        for i, name in enumerate(self.names):
            t = self.tables[name]
            total = sum(p.offsets[i].size for p in pushes)
            if total == 0:
                continue
            touched = np.empty(total, dtype=np.int64)
            acc = np.empty((total, t.spec.dim), dtype=np.float32)
            n = 0
            for p in pushes:
                n = accumulate_rows(t.slot, p.offsets[i], p.grads[i], touched, acc, n)
            release_slots(t.slot, touched[:n])
            self.optimizer.apply(t.shard, t.state, touched[:n], acc[:n])

    def free(self) -> None:
        """Collective: close the epochs and free the windows."""
        for reqs, _ in self._sending:
            MPI.Request.Waitall(reqs)
        for t in self.tables.values():
            if self.roles.role != SERVER:
                t.win.Unlock_all()
            t.free()
