"""Which stored rows a server reads when it restores a checkpoint. Pure NumPy, no MPI.

A checkpoint holds each old server's shard in its own local row order. A new server owns
the partitions the (possibly different) partition map gives it; every such partition is a
contiguous run of rows in its old owner's file and in the new shard, so the reads are runs,
merged where neighbouring partitions stay neighbours on both sides.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ring import PartitionMap, TableLayout, partition_sizes


@dataclass(frozen=True)
class Runs:
    """Rows ``src[i]:src[i]+length[i]`` of one old shard go to ``dst[i]:...`` of the new."""

    src: np.ndarray
    dst: np.ndarray
    length: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.length.sum())


def plan_reads(rows: int, salt: int, old: PartitionMap, new: PartitionMap,
               server: int) -> dict[int, Runs]:
    """For new server ``server``: per old server, the runs of rows to read from its file."""
    if old.partitions != new.partitions:
        raise ValueError("old and new partition maps differ in size")
    before, after = TableLayout.build(rows, salt, old), TableLayout.build(rows, salt, new)
    size = partition_sizes(rows, salt, new.partitions)
    mine = np.flatnonzero((new.owner == server) & (size > 0))
    owner, src, dst, n = old.owner[mine], before.base[mine], after.base[mine], size[mine]
    # A run continues while the owner stays and both sides stay contiguous.
    cont = (owner[1:] == owner[:-1]) & (src[1:] == src[:-1] + n[:-1]) \
        & (dst[1:] == dst[:-1] + n[:-1])
    starts = np.concatenate([[0], np.flatnonzero(~cont) + 1]).astype(np.int64)
    lengths = np.add.reduceat(n, starts) if mine.size else np.empty(0, np.int64)
    out = {}
    for s in np.unique(owner[starts]) if mine.size else []:
        pick = owner[starts] == s
        out[int(s)] = Runs(src[starts][pick], dst[starts][pick], lengths[pick])
    return out


def moved_fraction(rows: int, salt: int, old: PartitionMap, new: PartitionMap) -> float:
    """Share of a table's rows whose server differs between the two maps."""
    size = partition_sizes(rows, salt, new.partitions)
    return float(size[old.owner != new.owner].sum() / rows)
