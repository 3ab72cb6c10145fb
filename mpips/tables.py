"""Parameter tables sharded over the servers in MPI RMA windows.

Servers keep their shard of every table in window memory (``MPI.Win.Allocate``, or
``Allocate_shared`` when all ranks share a node) with the optimiser state beside it.
Workers pull one-sidedly: inside one ``Lock_all`` epoch opened at start they either read
the shards of same-node servers directly (``direct``) or issue one ``Get`` per server with
an indexed datatype, completed by ``Flush`` (``get``). No server CPU is needed for a pull.
Pushes are messages: each worker sends every server the gradient rows it owns, and the
server sums all workers' rows in worker order before one optimiser update (``apply``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from mpi4py import MPI

from .errors import ConfigError
from .kernels.sparse import gather_rows, scatter_rows, segment_sum, unique_inverse
from .models import TableSpec
from .optim import Optimizer
from .ring import PartitionMap, Route, TableLayout, name_salt, route
from .topology import SERVER, Roles

TAG_PUSH_META, TAG_PUSH_VALS, TAG_ACK = 11, 12, 13
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
        tmp = np.empty_like(out)
        if self.direct:
            t.win.Sync()
            for s in range(self.roles.n_servers):
                lo, hi = where.bounds[s], where.bounds[s + 1]
                if hi > lo:
                    gather_rows(t.views[s], where.rows_on(s), tmp[lo:hi])
        else:
            types = []
            for s in range(self.roles.n_servers):
                lo, hi = where.bounds[s], where.bounds[s + 1]
                if hi > lo:
                    dt = t.rowtype.Create_indexed_block(1, where.rows_on(s)).Commit()
                    t.win.Get([tmp[lo:hi], MPI.FLOAT], s, [0, 1, dt])
                    types.append(dt)
            t.win.Flush_all()
            for dt in types:
                dt.Free()
        scatter_rows(tmp, where.order, out)

    def push(self, step: int, flags: int, grads: dict[str, tuple[Route, np.ndarray]]
             ) -> list[MPI.Request]:
        """Send every server its rows of the gradients (one message pair per server)."""
        reqs: list[MPI.Request] = []
        bufs: list[np.ndarray] = []
        routes = [grads[n][0] for n in self.names]
        rows = [grads[n][1][grads[n][0].order] for n in self.names]
        for s in range(self.roles.n_servers):
            counts = [int(r.bounds[s + 1] - r.bounds[s]) for r in routes]
            meta = np.concatenate([np.array([step, flags, *counts], dtype=np.int64),
                                   *[r.rows_on(s) for r in routes]])
            vals = np.concatenate([g[r.bounds[s]:r.bounds[s + 1]].ravel()
                                   for r, g in zip(routes, rows)])
            reqs += [self.roles.ps.Isend(meta, s, TAG_PUSH_META),
                     self.roles.ps.Isend(vals, s, TAG_PUSH_VALS)]
            bufs += [meta, vals]
        self._sending.append((reqs, bufs))
        self._sending = [(r, b) for r, b in self._sending if not MPI.Request.Testall(r)]
        return reqs

    # ---- server side -------------------------------------------------------------------
    def poll_push(self) -> Push | None:
        """Receive one worker's push if one has arrived, else None (never blocks long)."""
        status = MPI.Status()
        if not self.roles.ps.Iprobe(MPI.ANY_SOURCE, TAG_PUSH_META, status):
            return None
        source = status.Get_source()
        meta = np.empty(status.Get_count(MPI.INT64_T), dtype=np.int64)
        self.roles.ps.Recv(meta, source, TAG_PUSH_META)
        T = len(self.names)
        counts = meta[2:2 + T]
        dims = [self.tables[n].spec.dim for n in self.names]
        vals = np.empty(int(np.dot(counts, dims)), dtype=np.float32)
        self.roles.ps.Recv(vals, source, TAG_PUSH_VALS)
        split_o = np.cumsum(counts)[:-1] + 2 + T
        split_v = np.cumsum(counts * np.asarray(dims))[:-1]
        grads = [v.reshape(-1, d) for v, d in zip(np.split(vals, split_v), dims)]
        return Push(source - self.roles.n_servers, int(meta[0]), int(meta[1]),
                    np.split(meta[2 + T:], split_o - 2 - T), grads)

    def apply(self, pushes: Sequence[Push]) -> None:
        """Sum the pushes' rows in the given (worker) order, then one optimiser update."""
        for i, name in enumerate(self.names):
            t = self.tables[name]
            offsets = np.concatenate([p.offsets[i] for p in pushes])
            if offsets.size == 0:
                continue
            grads = np.concatenate([p.grads[i] for p in pushes])
            uniq, inverse = unique_inverse(offsets)
            self.optimizer.apply(t.shard, t.state, uniq, segment_sum(inverse, grads, uniq.size))

    def free(self) -> None:
        """Collective: close the epochs and free the windows."""
        for reqs, _ in self._sending:
            MPI.Request.Waitall(reqs)
        for t in self.tables.values():
            if self.roles.role != SERVER:
                t.win.Unlock_all()
            t.free()
