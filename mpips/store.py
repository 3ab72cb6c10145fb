"""The server's side of the tables: its shards in RMA windows (``windows``), the optimiser
state beside them, pushes applied and acknowledged, partitions moved to and from other
servers when the placement changes.

A server sums all pushes of a step in the order given (worker order under BSP) before one
optimiser update per table, so the result depends neither on arrival order nor on the
number of servers or on where partitions live.

With feature admission or eviction (``admission.RowPolicy``) a sparse table's rows have a
record beside them (steps that saw the key, last step that touched it), which moves and is
checkpointed with the rows. Rows not admitted hold ``models.NOT_ADMITTED``; the optimiser
leaves them alone, and the step that admits one writes its initial values.

A table with a pull codec (``--pull-codec``) has a coded mirror of its rows in a second
window, which workers read instead of the float32 rows. It is derived state: the server
codes the rows each step updates (after the optimiser) and every row when the shards are
ready (fresh, or restored from a checkpoint) and after a move; checkpoints never hold it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from .admission import COUNT, LAST, RowPolicy, add_counts, new_record
from .clocks import StalenessLog
from .codecs import FP16, INT8, RAW, decode_rows, row_bytes
from .errors import ProtocolError
from .kernels.init import normal_rows
from .kernels.sparse import accumulate_rows, release_slots
from .message import PushMessage
from .models import NOT_ADMITTED, TableSpec, not_admitted
from .optim import Optimizer
from .placement import Placement, Runs, transfers
from .pullcodec import code_mirror
from .push import Outbox, poll_push, send_acks
from .ring import mix64, name_salt
from .topology import TAG_MOVE, Roles
from .waiting import transfer_all, wait_all
from .windows import JobWindows

_F4 = np.dtype(np.float32).itemsize
INIT_CHUNK = 1 << 20      # rows initialised at a time, to bound the temporary memory


def rows_type(array: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> MPI.Datatype:
    """A committed datatype (free it after use) for the rows ``starts[i]:starts[i] +
    lengths[i]`` of a C-contiguous 2-D ``array``: the runs of a move, sent or received in
    place."""
    width = int(np.prod(array.shape[1:], dtype=np.int64))
    return from_numpy_dtype(array.dtype).Create_hindexed(
        (np.asarray(lengths, np.int64) * width).tolist(),
        (np.asarray(starts, np.int64) * (width * array.itemsize)).tolist()).Commit()


def shard_bytes(spec: TableSpec, rows: int, optimizer: Optimizer, pull_codec: int = RAW
                ) -> int:
    """Bytes a server needs for ``rows`` rows of ``spec``: values, state, step slots, and
    the coded mirror of a table with a pull codec."""
    mirror = row_bytes(pull_codec, spec.dim) if pull_codec != RAW else 0
    return rows * (spec.dim * _F4 * (1 + len(optimizer.state_slots)) + 4 + mirror)


@dataclass
class MoveReport:
    """What a change of placement cost this server."""

    seconds: float
    sent_rows: int
    received_rows: int
    bytes: int
    new_windows: int


class ShardStore:
    """One server's shards of every table (collective over ``ps`` to build and close).

    ``rows(i)`` is the server's part of table ``i`` (a view into its window); the window
    holds ``capacity`` rows, the rest is room for partitions that may arrive."""

    def __init__(self, specs: Sequence[TableSpec], roles: Roles, optimizer: Optimizer,
                 placement: Placement, pull: str = "auto",
                 policy: RowPolicy = RowPolicy(), pull_codecs: Sequence[int] | None = None
                 ) -> None:
        """``pull_codecs``: per table the codec of its pulls (``codecs``; default none)."""
        self.specs, self.roles, self.optimizer = list(specs), roles, optimizer
        self.policy, self.seed = policy, policy.seed
        self.admitted = self.evicted = 0     # rows admitted and evicted by this server
        self.names = [s.name for s in specs]
        self.dims = [s.dim for s in specs]
        self.me, self.placement = roles.index, placement
        cap = placement.capacity[:, self.me]
        self.windows = JobWindows(roles.ps, self.names, self.dims, cap, self.me,
                                  roles.n_servers, pull, pull_codecs)
        self.state = [optimizer.new_state((int(c), d), self._rows_of(i))
                      for i, (c, d) in enumerate(zip(cap, self.dims))]
        self.rates = [optimizer.rates(s.dim, s.linear) for s in self.specs]
        # Per window row: 1 + its index among this step's summed rows, 0 if untouched.
        self.slot = [np.zeros(int(c), dtype=np.int32) for c in cap]
        # Per-row records (count, last step) and keys of the tracked sparse tables.
        self.record = [new_record(int(c)) if self._tracked(i) else None
                       for i, c in enumerate(cap)]
        self.keys: list[np.ndarray | None] = [None] * len(self.specs)
        self._index_keys()
        self.outbox = Outbox()

    def _tracked(self, table: int) -> bool:
        return self.specs[table].sparse and self.policy.tracking

    def _index_keys(self) -> None:
        """Each tracked table's key per local row (-1 for holes), for the placement now."""
        for i, rec in enumerate(self.record):
            if rec is not None:
                keys = np.full(rec.shape[0], -1, dtype=np.int64)
                held, rows = self.placement.layouts[i].held(self.me)
                keys[rows] = held
                self.keys[i] = keys
    def __enter__(self) -> "ShardStore":
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is None:             # after an error the job aborts: no collectives then
            self.close()

    # ---- rows and versions ---------------------------------------------------------------
    def _rows_of(self, table: int) -> int:
        return int(self.placement.layouts[table].shard_rows[self.me])

    def rows(self, table: int) -> np.ndarray:
        """This server's rows of ``table`` in local order (a view of the window)."""
        return self.windows.tables[table].shard[:self._rows_of(table)]

    def state_rows(self, table: int) -> dict[str, np.ndarray]:
        """The optimiser state of those rows (views)."""
        n = self._rows_of(table)
        return {k: v[:n] for k, v in self.state[table].items()}

    def record_rows(self, table: int) -> np.ndarray | None:
        """The per-row records (count, last step) of those rows (a view; None: the table
        keeps none)."""
        rec = self.record[table]
        return None if rec is None else rec[:self._rows_of(table)]

    @property
    def versions(self) -> np.ndarray:
        """Per table, the updates this server applied so far (a view)."""
        return self.windows.versions.mine

    def set_versions(self, versions: np.ndarray) -> None:
        """Publish table versions (restored from a checkpoint, or after a move)."""
        self.windows.versions.publish(np.asarray(versions, dtype=np.int64))

    def table_bytes(self) -> int:
        """Raw bytes of this server's rows and optimiser state."""
        return sum(self.rows(i).nbytes + sum(a.nbytes for a in self.state_rows(i).values())
                   for i in range(len(self.specs)))

    def _salt(self, spec: TableSpec) -> np.uint64:
        return np.uint64(mix64(np.uint64(self.seed) ^ np.uint64(name_salt(spec.name,
                                                                           1 << 62))))

    def init(self, seed: int) -> None:
        """Initial parameters: zeros, or seeded normal columns where a table asks for
        them; a row's values depend only on (seed, table, key), not on where it lives.
        Under admission every row but the fields' rare rows starts not admitted."""
        self.seed = seed
        for i, spec in enumerate(self.specs):
            shard = self.rows(i)
            shard[:] = 0.0
            if spec.init_std > 0 and shard.shape[0]:
                salt = self._salt(spec)
                for first, keys in self.placement.layouts[i].iter_keys(self.me, INIT_CHUNK):
                    normal_rows(shard[first:first + keys.size], keys, spec.init_from,
                                spec.init_std, salt)
            if self.record[i] is not None and spec.rare_from >= 0 and self.policy.admitting:
                keys = self.keys[i][:shard.shape[0]]
                shard.view(np.uint32)[(keys >= 0) & (keys < spec.rare_from)] = NOT_ADMITTED

    def _reset(self, table: int, rows: np.ndarray, admit: bool) -> None:
        """Rows back to their initial values and optimiser state: ``admit`` -- their own
        parameters from now on (the count stays); else evicted: under admission not
        admitted again (the fields' rare rows excepted), count 0."""
        if rows.size == 0:
            return
        spec, keys = self.specs[table], self.keys[table][rows]
        values = np.zeros((rows.size, self.dims[table]), np.float32)
        if spec.init_std > 0:
            normal_rows(values, keys, spec.init_from, spec.init_std, self._salt(spec))
        if not admit and self.policy.admitting and spec.rare_from >= 0:
            values.view(np.uint32)[keys < spec.rare_from] = NOT_ADMITTED
        # Column 0 says whether a row is admitted: a worker that reads it while the row
        # changes (SSP, ASP) must not see an admitted row with columns not yet written,
        # so it is written last on admission and first on eviction.
        shard = self.windows.tables[table].shard
        first, last = (slice(1, None), slice(0, 1)) if admit else (slice(0, 1), slice(1, None))
        shard[rows, first] = values[:, first]
        shard[rows, last] = values[:, last]
        fresh = self.optimizer.new_state((rows.size, self.dims[table]))
        for name, arr in self.state[table].items():
            arr[rows] = fresh[name]
        self._recode(table, rows)
        rec = self.record[table]
        if not admit:
            rec[rows, COUNT] = 0
            rec[rows, LAST] = -1

    def _track(self, table: int, parts: Sequence, rows: np.ndarray, step: int) -> np.ndarray:
        """A step's bookkeeping of a tracked table: add the pushes' sightings to their
        rows' counts (a key not admitted: the cells that held it), note the step on the
        rows pushed and sighted, admit what is due; then sweep for rows to evict if one
        is due. Returns which of ``rows`` the optimiser updates (the admitted ones)."""
        rec = self.record[table]
        for q in parts:
            if q.seen.size:                      # a push's sightings are unique
                rec[q.seen, COUNT] = add_counts(rec[q.seen, COUNT], q.seen_counts)
        sighted = [q.seen for q in parts if q.seen.size]
        seen = np.unique(np.concatenate([rows] + sighted)) if sighted else rows
        rec[seen, LAST] = step
        update = np.ones(rows.size, dtype=bool)
        if self.policy.admitting:
            shard = self.windows.tables[table].shard
            update = ~not_admitted(shard[rows])
            waiting = seen[not_admitted(shard[seen])]
            if waiting.size:
                now = self.policy.admits(rec[waiting, COUNT], self.keys[table][waiting], step)
                self._reset(table, waiting[now], admit=True)
                self.admitted += int(now.sum())
        if self.policy.sweeps(step):
            n = self._rows_of(table)
            stale = np.flatnonzero(self.policy.stale(rec[:n, LAST], step)
                                   & (self.keys[table][:n] >= 0))      # holes: no row
            self._reset(table, stale, admit=False)
            self.evicted += int(stale.size)
        return update

    def ready(self) -> None:
        """Collective: the shards are written (coded mirrors are coded from them now);
        workers may pull."""
        for i in range(len(self.specs)):
            self._recode(i)
        self.sync()
        self.windows.barrier()

    def sync(self) -> None:
        """Make this server's writes to its windows visible to one-sided readers."""
        for w in self.windows.tables + [m for m in self.windows.mirrors if m is not None]:
            w.win.Sync()

    def _recode(self, table: int, rows: np.ndarray | None = None) -> None:
        """Code ``rows`` (local indices; None: all this server holds) of ``table`` into
        its coded mirror, if it has one (the caller syncs)."""
        mirror = self.windows.mirrors[table]
        if mirror is not None:
            code_mirror(self.windows.codecs[table], self.windows.tables[table].shard,
                        mirror.shard, np.arange(self._rows_of(table)) if rows is None else rows)

    # ---- pushes --------------------------------------------------------------------------
    def poll(self) -> PushMessage | None:
        """A worker's push or mark, if one has arrived."""
        return poll_push(self.roles, self.dims)

    def apply(self, pushes: Sequence[PushMessage], tables: Sequence[int] | None = None,
              log: StalenessLog | None = None, step: int | None = None) -> int:
        """Sum the pushes' rows in the given (worker) order, then one optimiser update per
        table (all, or the indices in ``tables``). Each push's staleness -- the updates
        applied since its rows were pulled -- goes to ``log``; then the version advances.
        ``step`` (1-based, for Adam) is the BSP round; by default the pushes' own step.
        Returns the rows applied. Offsets outside this server's rows are a
        ``ProtocolError``: nothing is written then."""
        applied = 0
        versions = np.array(self.versions, dtype=np.int64)
        for i in range(len(self.specs)) if tables is None else tables:
            parts = [p.parts[i] for p in pushes]
            total = sum(len(q) for q in parts)
            if total == 0 and not any(q.seen.size for q in parts):
                continue
            n_rows = self._rows_of(i)
            for p, q in zip(pushes, parts):
                for got in (q.offsets, q.seen):
                    if got.size and (int(got.min()) < 0 or int(got.max()) >= n_rows):
                        raise ProtocolError(f"server {self.me}: a push from worker "
                                            f"{p.worker} for table {self.names[i]!r} holds "
                                            f"rows outside its {n_rows:,} (epoch {p.epoch})")
            if log is not None:
                for q in parts:
                    if len(q):
                        log.record(i, int(versions[i] - q.version))
            touched = np.empty(total, dtype=np.int64)
            acc = np.empty((total, self.dims[i]), dtype=np.float32)
            n = 0
            for q in parts:
                n = accumulate_rows(self.slot[i], q.offsets, q.rows, touched, acc, n)
            release_slots(self.slot[i], touched[:n])
            count = step if step is not None else max(p.step for p in pushes) + 1
            rows, grads = touched[:n], acc[:n]
            if self.record[i] is not None:
                update = self._track(i, parts, rows, count)
                if not update.all():
                    rows, grads = rows[update], grads[update]
            self.optimizer.apply(self.windows.tables[i].shard, self.state[i], rows, grads,
                                 count, self.rates[i])
            self.windows.tables[i].win.Sync()
            if self.windows.mirrors[i] is not None:
                self._recode(i, rows)
                self.windows.mirrors[i].win.Sync()
            versions[i] += 1
            applied += n
        if np.any(versions != self.versions):     # one atomic write of every version
            self.set_versions(versions)
        return applied

    def ack(self, pushes: Sequence[PushMessage]) -> None:
        """Tell each pushing worker that its step is applied (after ``apply``)."""
        send_acks(self.roles, self.outbox, pushes)

    def warm_up(self) -> None:
        """Load the numba kernels of ``apply`` and the push decoders (empty or tiny calls,
        no rows change) before the clock starts, not during the first push."""
        for i, dim in enumerate(self.dims):
            none = np.empty(0, dtype=np.int64)
            grads = np.empty((0, dim), dtype=np.float32)
            accumulate_rows(self.slot[i], none, grads, none.copy(), grads.copy(), 0)
            release_slots(self.slot[i], none)
            self.optimizer.apply(self.windows.tables[i].shard, self.state[i], none, grads, 1,
                                 self.rates[i])
        for codec in (FP16, INT8):      # the push decoders, whatever codec a worker sends
            decode_rows(codec, np.zeros((1, row_bytes(codec, 1)), np.uint8), 1)

    # ---- moves ---------------------------------------------------------------------------
    def move(self, new: Placement) -> MoveReport:
        """Collective over ``ps`` (workers call ``TableClient.adopt``): take up placement
        ``new``. Rows, optimiser state and records of partitions that leave go straight
        from their arrays to the new owners' (an indexed datatype per array and peer: no
        packing copy on either side); arriving rows land where the new layout puts them
        (after the rows in use; rows that stay do not move). A table that ``new`` rebuilt
        gets new windows, into which the staying rows are copied. A server that receives
        rows of a table takes the highest version of its senders'."""
        began = MPI.Wtime()
        old, me = self.placement, self.me
        old_windows = dict(zip(new.rebuilt, self.windows.reallocate(
            new.rebuilt, [new.capacity[i, me] for i in new.rebuilt])))
        reqs: list[MPI.Request] = []
        types: list[MPI.Datatype] = []
        senders: list[set[int]] = [set() for _ in self.specs]
        sent = received = moved_bytes = 0
        for i in range(len(self.specs)):
            plan = transfers(old.layouts[i], new.layouts[i])
            before = self._arrays(i)
            if i in old_windows:
                before[0] = old_windows[i].shard
                self._new_arrays(i, plan.get((me, me)), before, int(new.capacity[i, me]))
            after = self._arrays(i)
            for (s, d), runs in sorted(plan.items()):
                if s == me and d != me:
                    arrays, starts, peer, post = before, runs.src, d, self.roles.group.Isend
                    sent += runs.rows
                elif d == me and s != me:
                    arrays, starts, peer, post = after, runs.dst, s, self.roles.group.Irecv
                    senders[i].add(s)
                    received += runs.rows
                else:
                    continue
                for a in arrays:
                    types.append(rows_type(a, starts, runs.length))
                    reqs.append(post([a, 1, types[-1]], peer, TAG_MOVE))
                    moved_bytes += runs.rows * a.strides[0]
        transfer_all(reqs)
        for t in types:
            t.Free()
        self._merge_versions(senders)
        self.placement = new
        self._index_keys()
        for i in range(len(self.specs)):     # coded mirrors: every row, where it is now
            self._recode(i)
        self.sync()                          # visible before the barrier lets workers pull
        self.windows.release(list(old_windows.values()))
        return MoveReport(MPI.Wtime() - began, sent, received, moved_bytes, len(old_windows))

    def _arrays(self, table: int) -> list[np.ndarray]:
        """Per row of a table, what moves with it: its window rows, its optimiser state,
        its record (for tracked tables), in the same order on every server."""
        rec = self.record[table]
        return [self.windows.tables[table].shard, *self.state[table].values(),
                *([] if rec is None else [rec])]

    def touch_room(self, budget: int) -> int:
        """Write zeros into the spare rows (beyond those in use) of every table's window
        and optimiser state, up to ``budget`` bytes in all, shared out by the tables'
        spare bytes; returns the bytes touched. A fresh page costs its first touch (here
        about 1 s per 100 MiB), which a job that may move partitions pays now, before the
        clock starts, not in the pause of a move whose arriving rows land there. (Spare
        rows hold nothing; their state is zero already, their records were written when
        made.)"""
        spare = [([self.windows.tables[i].shard, *self.state[i].values()], self._rows_of(i),
                  self.slot[i].size) for i in range(len(self.specs))]
        total = sum((cap - n) * sum(a.strides[0] for a in arrays) for arrays, n, cap in spare)
        share = min(1.0, budget / total) if total > 0 else 0.0
        touched = 0
        for arrays, n, cap in spare:
            rows = int((cap - n) * share)
            for a in arrays:
                a[n:n + rows] = 0
                touched += rows * a.strides[0]
        return touched

    def _new_arrays(self, table: int, staying: Runs | None, before: list[np.ndarray],
                    capacity: int) -> None:
        """New state arrays (and records) beside the table's new window, with the rows
        that stay on this server copied from the old window, state and records
        (``before``, in ``_arrays``' order)."""
        self.state[table] = self.optimizer.new_state((capacity, self.dims[table]), 0)
        self.slot[table] = np.zeros(capacity, dtype=np.int32)
        if self.record[table] is not None:
            self.record[table] = new_record(capacity)
        if staying is not None:
            for src, dst in zip(before, self._arrays(table)):
                dst[staying.dst_rows()] = src[staying.src_rows()]

    def _merge_versions(self, senders: list[set[int]]) -> None:
        """After a move: each table's version is at least that of every server that sent
        rows of it, so versions never go back for the rows that moved."""
        mine = np.array(self.versions, dtype=np.int64)
        every = np.zeros((self.roles.n_servers, mine.size), dtype=np.int64)
        wait_all([self.roles.group.Iallgather(mine, every)])
        merged = mine.copy()
        for i, frm in enumerate(senders):
            if frm:
                merged[i] = max(mine[i], every[sorted(frm), i].max())
        self.set_versions(merged)

    def close(self) -> None:
        """Collective over ``ps``: finish sends, wait for every rank, free the windows."""
        self.outbox.flush()
        self.windows.free()

