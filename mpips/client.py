"""The worker's side of the tables: route keys by the current placement, pull their rows
one-sidedly, push gradient rows as one message per server, and follow placement changes.

Pulls need no server CPU: inside one ``Lock_all`` epoch a worker either reads the shards
of same-node servers directly (``direct``) or issues one ``Get`` per server with an
indexed datatype, completed by ``Flush``. Just before a pull the worker reads every
server's table versions; its next push carries them, so servers can tell how many updates
the pushed rows had missed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mpi4py import MPI

from .errors import ProtocolError
from .kernels.sparse import gather_scatter_rows, scatter_rows
from .message import FLAG_LAST, PushMessage, TablePart, encode, mark
from .models import TableSpec
from .placement import Placement
from .push import Outbox, PushHandle, send_mark, send_push
from .ring import Route, route
from .topology import Roles
from .windows import JobWindows


class TableClient:
    """One worker's view of every table (collective over ``ps`` to build, move and close)."""

    def __init__(self, specs: Sequence[TableSpec], roles: Roles, placement: Placement,
                 pull: str = "auto") -> None:
        self.roles, self.placement = roles, placement
        self.names = [s.name for s in specs]
        self.dims = [s.dim for s in specs]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.windows = JobWindows(roles.ps, self.names, self.dims, [0] * len(specs), None,
                                  roles.n_servers, pull)
        self.outbox = Outbox()
        self.versions = np.zeros((roles.n_servers, len(specs)), dtype=np.int64)

    def __enter__(self) -> "TableClient":
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is None:             # after an error the job aborts: no collectives then
            self.close()

    @property
    def direct(self) -> bool:
        """Pulls are plain loads of node-shared memory."""
        return self.windows.direct

    def ready(self) -> None:
        """Collective: wait until the servers' shards are initialised."""
        self.windows.barrier()

    def route(self, name: str, keys: np.ndarray) -> Route:
        """Group a lookup's unique keys by server, once per step for pull and push."""
        return route(self.placement.layouts[self.index[name]], keys, self.placement.epoch)

    def read_versions(self) -> np.ndarray:
        """Every server's table versions, read just before a pull; the next push sends
        them back (a copy)."""
        self.versions = self.windows.versions.read()
        return self.versions.copy()

    def pull(self, name: str, where: Route, out: np.ndarray) -> None:
        """Fill ``out`` (one row per routed key, request order) from the servers' shards."""
        w = self.windows.tables[self.index[name]]
        n_servers = self.roles.n_servers
        if self.direct:
            w.win.Sync()
            for s in range(n_servers):
                if where.bounds[s + 1] > where.bounds[s]:
                    gather_scatter_rows(w.views[s], where.rows_on(s), where.positions(s), out)
            return
        tmp = np.empty_like(out)
        types = []
        for s in range(n_servers):
            lo, hi = where.bounds[s], where.bounds[s + 1]
            if hi > lo:
                # A list converts to MPI displacements 3x faster than an int64 array.
                dt = w.rowtype.Create_indexed_block(1, where.rows_on(s).tolist()).Commit()
                w.win.Get([tmp[lo:hi], MPI.FLOAT], self.roles.server_ps_rank(s), [0, 1, dt])
                types.append(dt)
        w.win.Flush_all()
        for dt in types:
            dt.Free()
        scatter_rows(tmp, where.order, out)

    def push(self, step: int, last: bool, grads: dict[str, tuple[Route, np.ndarray]]
             ) -> PushHandle:
        """Send every server its rows of the gradients (tables not in ``grads`` send no
        rows), with the versions read before the pull and the epoch of the placement the
        rows were routed with (a server refuses any other). The handle waits until every
        server has applied the step."""
        empty = np.empty(0, dtype=np.int64)
        flags = FLAG_LAST if last else 0
        epochs = {r.epoch for r, _ in grads.values()} or {self.placement.epoch}
        if len(epochs) != 1:
            raise ProtocolError(f"worker {self.roles.index}: a push mixes routes of "
                                f"epochs {sorted(epochs)}")
        epoch = epochs.pop()
        messages = []
        for s in range(self.roles.n_servers):
            parts = []
            for i, name in enumerate(self.names):
                version = int(self.versions[s, i])
                if name not in grads:
                    parts.append(TablePart(i, version, empty,
                                           np.empty((0, self.dims[i]), np.float32)))
                    continue
                r, rows = grads[name]
                lo, hi = int(r.bounds[s]), int(r.bounds[s + 1])
                order = None if r.bounds.size == 2 else r.order[lo:hi]
                parts.append(TablePart(i, version, r.offsets[lo:hi], rows, order))
            messages.append(encode(PushMessage(self.roles.index, step, flags, epoch, parts),
                                   self.dims))
        return send_push(self.roles, self.outbox, messages)

    def mark(self, label: int) -> None:
        """Tell every server that this worker paused before step ``label`` (sent after
        its pushes, so a server sees those first)."""
        send_mark(self.roles, self.outbox,
                  encode(mark(self.roles.index, label, self.placement.epoch), self.dims))

    def adopt(self, new: Placement) -> None:
        """Collective over ``ps`` with the servers' ``ShardStore.move``: route by ``new``
        from now on; the tables it rebuilt get new windows. Returns once every server has
        its new rows in place."""
        self.windows.release(self.windows.reallocate(new.rebuilt, [0] * len(new.rebuilt)))
        self.placement = new

    def pull_all(self) -> dict[str, np.ndarray]:
        """Every row of every table (for tests and inspection)."""
        out = {}
        for name, i in self.index.items():
            rows = self.placement.layouts[i].rows
            out[name] = np.empty((rows, self.dims[i]), np.float32)
            self.pull(name, self.route(name, np.arange(rows, dtype=np.int64)), out[name])
        return out

    def close(self) -> None:
        """Collective over ``ps``: finish sends, wait for every rank, free the windows."""
        self.outbox.flush()
        self.windows.free()
