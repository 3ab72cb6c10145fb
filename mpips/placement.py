"""Placement: which server holds each partition now, under which epoch, and what a change
of placement moves. Pure NumPy, no MPI.

A job starts on the consistent-hash ring over its active servers; standby servers own no
partitions. A change (``Moves``: load balancing, a server joining or drained, the
``--move-every`` test aid) gives a new partition map and the next epoch. Every rank derives
the same layouts from the map (``TableLayout.build``: a server's partitions back to back in
partition order), so only the moves travel, and a checkpoint's files have the same layout
whatever moves came before.

A move changes no row that stays where it is: partitions that arrive at a server go after
the rows it uses, those that leave leave holes (``TableLayout.appended``). Each server's
window of a table holds ``capacity`` rows, more than it needs (``headroom``; pages a
server never writes cost no memory). When arrivals would overflow a server's window, that
table is laid out afresh for every server (``TableLayout.build``: no holes) in new windows
with headroom again (``rebuilt``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .models import TableSpec
from .ring import PartitionMap, TableLayout, name_salt, partition_sizes, ring_owners

HEADROOM = 0.5          # default spare capacity of a window, as a share of its rows


@dataclass(frozen=True)
class Moves:
    """Partitions that get new owners: ``owners[i]`` takes ``partitions[i]``."""

    partitions: np.ndarray
    owners: np.ndarray
    reason: str = "balance"          # balance, join, drain or aid (--move-every)

    def __len__(self) -> int:
        return int(self.partitions.size)

    @classmethod
    def none(cls, reason: str = "balance") -> "Moves":
        return cls(np.empty(0, np.int64), np.empty(0, np.int32), reason)


@dataclass(frozen=True)
class Runs:
    """Rows ``src[i]:src[i]+length[i]`` of one layout go to ``dst[i]:...`` of another."""

    src: np.ndarray
    dst: np.ndarray
    length: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.length.sum())

    def src_rows(self) -> np.ndarray:
        """Every row the runs read, in run order."""
        return _run_index(self.src, self.length)

    def dst_rows(self) -> np.ndarray:
        """Every row the runs write, in the same order."""
        return _run_index(self.dst, self.length)


def _run_index(starts: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, length)])``, vectorised."""
    first = np.repeat(starts - np.cumsum(length) + length, length)
    return first + np.arange(int(length.sum()), dtype=np.int64)


def _capacity(rows: int, headroom: float) -> int:
    """Rows a window gets for ``rows`` rows: the headroom on top, at least one row (so a
    dense table's single row can move anywhere without a new window)."""
    return max(1, int(np.ceil(rows * (1.0 + headroom))))


@dataclass(frozen=True)
class Placement:
    """The partition map, its epoch, every table's layout, the rows each server's window
    of each table holds (``capacity``, tables x servers), and the tables whose windows
    this placement made anew (``rebuilt``: its predecessor's windows were too small)."""

    epoch: int
    pmap: PartitionMap
    layouts: tuple[TableLayout, ...]
    capacity: np.ndarray
    headroom: float = HEADROOM
    rebuilt: tuple[int, ...] = ()

    @classmethod
    def start(cls, specs: Sequence[TableSpec], n_servers: int, active: int,
              headroom: float = HEADROOM) -> "Placement":
        """The ring over servers ``0..active-1`` of ``n_servers`` (the rest stand by)."""
        return cls.of_map(specs, PartitionMap(ring_owners(range(active)), n_servers), 0,
                          headroom)

    @classmethod
    def of_map(cls, specs: Sequence[TableSpec], pmap: PartitionMap, epoch: int,
               headroom: float = HEADROOM) -> "Placement":
        """The layouts of ``pmap`` (a checkpoint's, say), windows with headroom; a server
        without partitions gets room for what it would take on joining."""
        layouts = tuple(TableLayout.build(s.rows, name_salt(s.name), pmap) for s in specs)
        capacity = np.array([[_capacity(int(r), headroom) for r in t.shard_rows]
                             for t in layouts], dtype=np.int64)
        placed = cls(epoch, pmap, layouts, capacity, headroom)
        for s in set(range(pmap.n_servers)) - set(placed.active()):
            joined = placed.after(join(placed, s))
            capacity[:, s] = [_capacity(int(t.shard_rows[s]), headroom)
                              for t in joined.layouts]
        return cls(epoch, pmap, layouts, capacity, headroom)

    @property
    def n_servers(self) -> int:
        return self.pmap.n_servers

    def active(self) -> list[int]:
        """Servers that own at least one partition."""
        return np.flatnonzero(np.bincount(self.pmap.owner, minlength=self.n_servers)).tolist()

    def after(self, moves: Moves) -> "Placement":
        """The next epoch's placement: arrivals appended, or, for a table whose windows
        they would overflow, a fresh layout in new windows."""
        owner = self.pmap.owner.copy()
        owner[moves.partitions] = moves.owners
        pmap = PartitionMap(owner, self.n_servers)
        layouts, capacity, rebuilt = [], self.capacity.copy(), []
        for i, t in enumerate(self.layouts):
            layout = t.appended(pmap)
            if (layout.shard_rows > capacity[i]).any():
                layout = TableLayout.build(t.rows, t.salt, pmap)
                capacity[i] = [_capacity(int(r), self.headroom) for r in layout.shard_rows]
                rebuilt.append(i)
            layouts.append(layout)
        return Placement(self.epoch + 1, pmap, tuple(layouts), capacity, self.headroom,
                         tuple(rebuilt))

    def moved_rows(self, other: "Placement") -> int:
        """Rows, over all tables, whose server differs in ``other``."""
        changed = self.pmap.moved(other.pmap)
        return int(sum(partition_sizes(t.rows, t.salt, t.pmap.partitions)[changed].sum()
                       for t in self.layouts))


def join(placement: Placement, server: int) -> Moves:
    """Bring ``server`` in: the partitions the ring over the active servers plus it gives
    it, about 1/(S+1), all of them onto it (the ring's minimum), whatever moved before."""
    ring = ring_owners([*placement.active(), server])
    mine = np.flatnonzero(ring == server)
    return Moves(mine, np.full(mine.size, server, np.int32), "join")


def drain(placement: Placement, server: int) -> Moves:
    """Move every partition of ``server`` to the ring over the other active servers."""
    others = [s for s in placement.active() if s != server]
    if not others:
        raise ValueError(f"server {server} is the only active server: nothing can take "
                         f"its partitions")
    mine = np.flatnonzero(placement.pmap.owner == server)
    return Moves(mine, ring_owners(others)[mine], "drain")


def seeded_moves(placement: Placement, seed: int, count: int) -> Moves:
    """The ``--move-every`` test aid: ``count`` partitions chosen by (seed, epoch), each
    to another active server chosen the same way (none with one active server)."""
    active = np.array(placement.active())
    if active.size < 2:
        return Moves.none("aid")
    rng = np.random.default_rng([seed, placement.epoch, 0x6D6F7665])
    parts = np.sort(rng.choice(placement.pmap.partitions, size=count, replace=False))
    shift = rng.integers(1, active.size, size=count)
    where = np.searchsorted(active, placement.pmap.owner[parts])
    return Moves(parts.astype(np.int64), active[(where + shift) % active.size].astype(np.int32),
                 "aid")


def transfers(before: TableLayout, after: TableLayout, only: Optional[np.ndarray] = None
              ) -> dict[tuple[int, int], Runs]:
    """For a change of layout of one table: per (old owner, new owner) the runs of rows
    from the old owner's shard to the new owner's, merged where neighbouring partitions
    stay neighbours on both sides. The pair (s, s) holds the rows that stay on ``s``.
    ``only``: of those partitions alone."""
    P, S = after.pmap.partitions, max(before.pmap.n_servers, after.pmap.n_servers)
    if before.pmap.partitions != P or before.rows != after.rows:
        raise ValueError("the layouts belong to different tables")
    size = partition_sizes(after.rows, after.salt, P)
    parts = np.flatnonzero(size > 0)
    if only is not None:
        parts = np.intersect1d(parts, only)
    pair = before.pmap.owner[parts].astype(np.int64) * S + after.pmap.owner[parts]
    order = np.lexsort((parts, pair))
    parts, pair = parts[order], pair[order]
    src, dst, n = before.base[parts], after.base[parts], size[parts]
    cont = (pair[1:] == pair[:-1]) & (src[1:] == src[:-1] + n[:-1]) \
        & (dst[1:] == dst[:-1] + n[:-1])
    starts = np.concatenate([[0], np.flatnonzero(~cont) + 1]).astype(np.int64)
    if parts.size == 0:
        return {}
    lengths, run_pair = np.add.reduceat(n, starts), pair[starts]
    out = {}
    for key in np.unique(run_pair).tolist():
        pick = run_pair == key
        out[key // S, key % S] = Runs(src[starts[pick]], dst[starts[pick]], lengths[pick])
    return out


def reads_of(before: TableLayout, after: TableLayout, server: int,
             only: Optional[np.ndarray] = None) -> dict[int, Runs]:
    """For new owner ``server``: per old owner, the runs to read (restore, moves, a
    recovery); ``only``: of those partitions alone."""
    return {s: r for (s, d), r in transfers(before, after, only).items() if d == server}


def moved_fraction(rows: int, salt: int, old: PartitionMap, new: PartitionMap) -> float:
    """Share of a table's rows whose server differs between the two maps."""
    size = partition_sizes(rows, salt, new.partitions)
    return float(size[old.owner != new.owner].sum() / rows)
