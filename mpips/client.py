"""The worker's side of the tables: route keys by the current placement, pull their rows
one-sidedly, push gradient rows as one message per server, and follow placement changes.

Pulls need no server CPU: inside one ``Lock_all`` epoch a worker either reads the shards
of same-node servers directly (``direct``) or issues one ``Get`` per server with an
indexed datatype, completed by ``Flush``. Just before a pull the worker reads every
server's table versions; its next push carries them, so servers can tell how many updates
the pushed rows had missed.

Pushes go through each table's compression (``codecs``): the rows a server gets are
sorted by shard offset, their offsets delta-coded, their values coded; with a lossy codec
or ``topk`` the client keeps per key what it did not send (``residuals``) and adds it to
the key's next gradient. Every push and pull is counted in ``traffic`` and waits for the
``--link-gbps`` aid.

A table with a pull codec (``pullcodec``) is read in training from its servers' coded
mirrors and decoded here; other reads (validation, ``pull_all``) read the float32 rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from mpi4py import MPI

from .checkpoint.residualfile import read_residuals, write_residuals
from .codecs import RAW, Compression, encode_rows, round_trip, row_bytes
from .errors import ProtocolError
from .kernels.keymap import warm_up as keymap_warm_up
from .kernels.sparse import gather_scatter_rows, scatter_rows
from .message import (FLAG_LAST, HEAD_BYTES, PushMessage, TablePart, encode,
                      float32_part_bytes, mark, part_bytes)
from .models import TableSpec
from .placement import Placement
from .pullcache import PullCache
from .pullcodec import code_pulled, decode_pulled
from .push import Outbox, PushHandle, send_mark, send_push
from .keyrows import ResidualStore, residual_store
from .residuals import feedback
from .ring import Route, route
from .topology import Roles
from .traffic import Link, Traffic
from .windows import JobWindows, ShardWindow

RESIDUAL_ROWS = 1 << 20        # default bound of a table's residuals, in keys per worker


class TableClient:
    """One worker's view of every table (collective over ``ps`` to build, move and close)."""

    def __init__(self, specs: Sequence[TableSpec], roles: Roles, placement: Placement,
                 pull: str = "auto", compression: Sequence[Compression] | None = None,
                 residual_rows: int = RESIDUAL_ROWS, link_gbps: float = 0.0,
                 caches: Sequence[PullCache | None] | None = None,
                 pull_codecs: Sequence[int] | None = None) -> None:
        """``compression``: per table (default: none); ``residual_rows``: the bound of
        each lossy table's residuals (keys); ``link_gbps``: the slow-link aid (0: off);
        ``caches``: per table its pull cache (``pullcache``; default none);
        ``pull_codecs``: per table the codec of its training pulls (default none)."""
        self.roles, self.placement = roles, placement
        self.names = [s.name for s in specs]
        self.dims = [s.dim for s in specs]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.pull_codecs = list(pull_codecs or [RAW] * len(specs))
        self.windows = JobWindows(roles.ps, self.names, self.dims, [0] * len(specs), None,
                                  roles.n_servers, pull, self.pull_codecs)
        self.outbox = Outbox()
        self.versions = np.zeros((roles.n_servers, len(specs)), dtype=np.int64)
        self.compression = list(compression or [Compression()] * len(specs))
        self.table_rows = [s.rows for s in specs]
        self.residual_rows = residual_rows
        self.residuals = self._new_residuals()
        self.traffic = Traffic(self.names)
        self.link = Link(link_gbps)
        self.dropped = 0             # rows whose rounding was dropped (``residuals``)
        self.caches = list(caches or [None] * len(specs))

    def __enter__(self) -> "TableClient":
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is None:             # after an error the job aborts: no collectives then
            self.close()

    @property
    def direct(self) -> bool:
        """Pulls are plain loads of node-shared memory."""
        return self.windows.direct

    def warm_up(self) -> None:
        """Load the kernels of pushes and error feedback (tiny calls, no communication)
        before the clock starts, not during the first push."""
        keymap_warm_up()
        for comp, dim in zip(self.compression, self.dims):
            round_trip(comp.codec, np.zeros((1, dim), np.float32))
        for codec, dim in zip(self.pull_codecs, self.dims):
            if codec != RAW:
                records = code_pulled(codec, np.zeros((1, dim), np.float32))
                decode_pulled(codec, records, dim)
                gather_scatter_rows(records, np.zeros(1, np.int64), np.zeros(1, np.int64),
                                    records.copy())
                scatter_rows(records, np.zeros(1, np.int64), records.copy())

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

    def pull(self, name: str, where: Route, out: np.ndarray,
             keys: np.ndarray | None = None, count: bool = True) -> None:
        """Fill ``out`` (one row per routed key, request order) from the servers' shards,
        or, given the unique ``keys`` and a pull cache, from the cache where its rows are
        fresh enough. A training pull (``count``) is counted in ``traffic`` and waits
        for the slow-link aid; it alone goes through the table's pull codec."""
        i = self.index[name]
        cache, n = self.caches[i], int(where.offsets.size)
        if cache is None or keys is None or n == 0:
            self._read(i, where, out, count)
            if count:
                self._pulled(i, n, n)
            return
        server = np.empty(n, dtype=np.int64)
        server[where.order] = np.repeat(np.arange(self.roles.n_servers), np.diff(where.bounds))
        versions = self.versions[server, i]
        hit, slots = cache.lookup(keys, versions)
        cache.serve(slots, hit, out)
        miss = np.ones(n, dtype=bool)
        miss[hit] = False
        miss = np.flatnonzero(miss)
        rows = np.empty((miss.size, self.dims[i]), np.float32)
        self._read(i, self.route(name, keys[miss]), rows, True)
        out[miss] = rows
        cache.keep(keys[miss], rows, versions[miss])
        self._pulled(i, miss.size, n)

    def _pulled(self, i: int, rows: int, needed: int) -> None:
        """Count a pull of ``rows`` rows (of ``needed``) as coded and as float32, and wait
        for the link aid."""
        width = row_bytes(self.pull_codecs[i], self.dims[i])
        self.traffic.add("pull_bytes", i, width * rows)
        self.traffic.add("pull_bytes_raw", i, 4 * self.dims[i] * needed)
        self.link.cross(width * rows)

    def _read(self, i: int, where: Route, out: np.ndarray, coded: bool) -> None:
        """The one-sided read of ``pull``: with ``coded`` and a pull codec, of the
        table's coded mirrors, decoded into ``out``."""
        codec = self.pull_codecs[i] if coded else RAW
        if codec == RAW:
            self._get(self.windows.tables[i], where, out)
            return
        records = np.empty((out.shape[0], row_bytes(codec, self.dims[i])), np.uint8)
        self._get(self.windows.mirrors[i], where, records)
        out[:] = decode_pulled(codec, records, self.dims[i])

    def _get(self, w: ShardWindow, where: Route, out: np.ndarray) -> None:
        """Rows of window ``w`` (a table's or its coded mirror's) into ``out``, in the
        route's request order."""
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
                w.win.Get([tmp[lo:hi], w.mpi_type], self.roles.server_ps_rank(s), [0, 1, dt])
                types.append(dt)
        w.win.Flush_all()
        for dt in types:
            dt.Free()
        scatter_rows(tmp, where.order, out)

    def push(self, step: int, last: bool, grads: dict[str, tuple[Route, np.ndarray]],
             keys: dict[str, np.ndarray] | None = None,
             seen: dict[str, np.ndarray] | None = None) -> PushHandle:
        """Send every server its rows of the gradients (tables not in ``grads`` send no
        rows), coded by each table's compression, with the versions read before the pull
        and the epoch of the placement the rows were routed with (a server refuses any
        other). A lossy table needs its unique ``keys`` (the route's request order) for
        error feedback; the ``last`` push drops (and counts) what it leaves. ``seen``
        gives, per table and in its route's request order, how many cells held each key
        that was not admitted (``Lookup.seen``): those go as sightings, and their zero
        rows are left out. The handle waits until every server has applied the step."""
        flags = FLAG_LAST if last else 0
        epochs = {r.epoch for r, _ in grads.values()} or {self.placement.epoch}
        if len(epochs) != 1:
            raise ProtocolError(f"worker {self.roles.index}: a push mixes routes of "
                                f"epochs {sorted(epochs)}")
        epoch = epochs.pop()
        tables = [self._coded(i, name, step, last, grads, keys)
                  for i, name in enumerate(self.names)]
        sighted = [(grads[name][0], seen[name]) if seen and name in seen else None
                   for name in self.names]
        messages = []
        for s in range(self.roles.n_servers):
            parts = [self._part(i, s, *t, sighted[i]) for i, t in enumerate(tables)]
            messages.append(encode(PushMessage(self.roles.index, step, flags, epoch, parts),
                                   self.dims))
            self._count(messages[-1], last)
        self.link.cross(sum(m.size for m in messages))
        return send_push(self.roles, self.outbox, messages)

    def _coded(self, i: int, name: str, step: int, last: bool,
               grads: dict[str, tuple[Route, np.ndarray]], keys: dict[str, np.ndarray] | None
               ) -> tuple[Route | None, np.ndarray, int]:
        """Table ``i``'s rows to send: their route (None: no rows), the coded records and
        the codec. With error feedback the rows sent may be other keys than the step's
        (``topk``, a full residual store), routed afresh by the current placement."""
        comp, store = self.compression[i], self.residuals[i]
        if name not in grads:
            if store is None or not (last and len(store)):
                return None, np.empty((0, 4 * self.dims[i]), np.uint8), RAW
            grads = {**grads, name: (self.route(name, np.empty(0, np.int64)),
                                     np.empty((0, self.dims[i]), np.float32))}
            keys = {**(keys or {}), name: np.empty(0, np.int64)}
        where, rows = grads[name]
        cache = self.caches[i]
        if store is None:
            if cache is not None and keys is not None and name in keys:
                cache.wrote(keys[name])
            return where, encode_rows(RAW, rows), RAW
        if keys is None or name not in keys:
            raise ValueError(f"table {name!r} keeps residuals: push needs its keys")
        out = feedback(store, comp, keys[name], rows, step, flush=last)
        if cache is not None:
            cache.wrote(out.keys)
        self.dropped += out.dropped
        if not out.same:
            where = self.route(name, out.keys)
        return where, out.coded, comp.codec

    def _part(self, i: int, s: int, where: Route | None, records: np.ndarray,
              codec: int, sighted: tuple[Route, np.ndarray] | None) -> TablePart:
        """Server ``s``'s part of table ``i``: its offsets sorted, the records they pick,
        and its sightings (``sighted``: the step's route and cells per key not admitted).
        Rows of keys sighted are left out where the rows follow the step's route."""
        version = int(self.versions[s, i])
        none = np.empty(0, np.int64)
        seen, counts = (none, none) if sighted is None else sightings(*sighted, s)
        if where is None or where.bounds[s + 1] == where.bounds[s]:
            return TablePart(i, version, none, records[:0], codec=codec, seen=seen,
                             seen_counts=counts)
        lo, hi = int(where.bounds[s]), int(where.bounds[s + 1])
        offsets, positions = where.offsets[lo:hi], where.order[lo:hi]
        if sighted is not None and where is sighted[0]:
            keep = sighted[1][positions] == 0
            offsets, positions = offsets[keep], positions[keep]
        by_offset = np.argsort(offsets, kind="stable")
        return TablePart(i, version, offsets[by_offset], records, positions[by_offset],
                         codec, seen, counts)

    def _count(self, buf: np.ndarray, last: bool) -> None:
        """Count a message's bytes to its tables (the header shared out evenly), and as it
        would have been uncoded; those of the ``last`` push apart too."""
        parts = part_bytes(buf, self.dims)
        head = HEAD_BYTES // max(1, len(parts))
        for table, rows, key_bytes, nbytes in parts:
            self.traffic.add("push_bytes", table, nbytes + head)
            if last:
                self.traffic.add("push_bytes_last", table, nbytes + head)
            self.traffic.add("push_bytes_raw", table,
                             float32_part_bytes(rows, self.dims[table]) + head)
            self.traffic.add("push_key_bytes", table, key_bytes)
            self.traffic.add("push_key_bytes_raw", table, 8 * rows)

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
        for cache in self.caches:             # its versions were other servers'
            if cache is not None:
                cache.clear()

    def restore_residuals(self, doc: dict, step_dir: Path) -> int:
        """Take up this worker's residuals from a checkpoint (``agree_restore``'s loader:
        a damaged file makes every rank try an older checkpoint). Returns 0 (rows moved)."""
        saved = read_residuals(doc, step_dir, self.roles.index, self.roles.n_workers,
                               self.names, self.dims, self.table_rows)
        self.residuals = self._new_residuals()
        for i, found in enumerate(saved):
            if found is not None:
                if self.residuals[i] is None:       # a table that kept them, now uncoded
                    self.residuals[i] = residual_store(self.dims[i], self.table_rows[i],
                                                       self.residual_rows)
                self.residuals[i].put(*found)
        return 0

    def _new_residuals(self) -> list[ResidualStore | None]:
        """An empty residual store per table that keeps residuals (``residual_store``)."""
        return [residual_store(d, rows, self.residual_rows) if c.lossy else None
                for c, d, rows in zip(self.compression, self.dims, self.table_rows)]

    def save_residuals(self, run_dir: Path, step: int) -> dict | None:
        """Write this worker's residuals into the checkpoint of ``step`` being assembled;
        its manifest entry, or None when no table keeps residuals."""
        if all(s is None for s in self.residuals):
            return None
        return write_residuals(run_dir, step, self.roles.index, self.names, self.residuals)

    def pull_all(self) -> dict[str, np.ndarray]:
        """Every row of every table (for tests and inspection)."""
        out = {}
        for name, i in self.index.items():
            rows = self.placement.layouts[i].rows
            out[name] = np.empty((rows, self.dims[i]), np.float32)
            self._get(self.windows.tables[i], self.route(name, np.arange(rows, dtype=np.int64)),
                      out[name])
        return out

    def close(self) -> None:
        """Collective over ``ps``: finish sends, wait for every rank, free the windows."""
        self.outbox.flush()
        self.windows.free()


def sightings(where: Route, cells: np.ndarray, server: int) -> tuple[np.ndarray, np.ndarray]:
    """Server ``server``'s sightings of a step routed by ``where``: the offsets (sorted)
    of its keys with ``cells`` > 0 (per key, in request order) and those counts."""
    lo, hi = int(where.bounds[server]), int(where.bounds[server + 1])
    counts = cells[where.order[lo:hi]]
    held = counts > 0
    offsets = where.offsets[lo:hi][held]
    by_offset = np.argsort(offsets, kind="stable")
    return offsets[by_offset], counts[held][by_offset].astype(np.int64)
