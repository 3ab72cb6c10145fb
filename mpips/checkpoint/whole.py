"""Whole tables out of a checkpoint, in key order, in one process. No MPI.

Each server file holds its rows as its window held them: the partitions it owned (after
moves, in the order they arrived, with holes where others left), each a contiguous run
that starts at the row the file's partition index gives (``saved_layout``). A table is
rebuilt by key from every server's file, a bounded run of partitions at a time, so the
extra memory stays small whatever the table's size; every block read is verified against
the manifest (``ServerFile``). Optimiser state is not read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import CheckpointError
from ..ring import PartitionMap, TableLayout, name_salt, partition_sizes
from .layout import server_file
from .shardfile import ServerFile

CHUNK_ROWS = 1 << 20      # rows read at a time


def saved_layout(files: Sequence[ServerFile], name: str, rows: int,
                 pmap: PartitionMap) -> TableLayout:
    """Table ``name``'s layout as the servers saved it: each file names the partitions
    it held and the row each starts at, so any layout reads back, moves and holes
    included. A file whose index disagrees with the map, or whose runs do not fit its
    rows, is a ``CheckpointError`` naming it."""
    salt = name_salt(name)
    size = partition_sizes(rows, salt, pmap.partitions)
    held = {}
    for s, f in enumerate(files):
        parts = f.read(f"tables/{name}/partitions").astype(np.int64)
        starts = f.read(f"tables/{name}/partition_start").astype(np.int64)
        used = f.entry["datasets"][f"tables/{name}/rows"]["shape"][0]
        owned = np.flatnonzero(pmap.owner == s)
        if parts.shape != starts.shape or not np.array_equal(np.sort(parts), owned) \
                or (starts < 0).any() or (starts + size[parts] > used).any():
            raise CheckpointError(f"{f.path}: the partition index of table {name!r} does "
                                  f"not match the partition map (damaged file)")
        held[s] = parts, starts, used
    return held_layout(rows, salt, pmap, held)


def held_layout(rows: int, salt: int, pmap: PartitionMap,
                held: dict[int, tuple[np.ndarray, np.ndarray, int]]) -> TableLayout:
    """A table's layout as servers held it: per server (the key) its partitions, the row
    each starts at and the rows it used (holes included); servers not named hold
    nothing of it here."""
    base = np.zeros(pmap.partitions, dtype=np.int64)
    used = np.zeros(pmap.n_servers, dtype=np.int64)
    for s, (parts, starts, n) in held.items():
        base[parts] = starts
        used[s] = n
    return TableLayout(rows, salt, pmap, base, used, canonical=False)


def held_runs(layout: TableLayout, server: int, chunk_rows: int = CHUNK_ROWS
              ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(starts, lengths, keys) for groups of about ``chunk_rows`` rows of the non-empty
    partitions ``server`` holds: the runs to read and the key of each row they give."""
    P = layout.pmap.partitions
    size = partition_sizes(layout.rows, layout.salt, P)
    mine = np.flatnonzero((layout.pmap.owner == server) & (size > 0))
    ends = np.cumsum(size[mine])
    lo = 0
    while lo < mine.size:
        hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - size[mine[lo]] + chunk_rows)))
        parts = mine[lo:hi]
        n = size[parts]
        index = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
        yield layout.base[parts], n, np.repeat((parts - layout.salt) % P, n) + P * index
        lo = hi


def read_tables(step_dir: Path, doc: dict, names: Iterable[str] | None = None
                ) -> dict[str, np.ndarray]:
    """Tables ``names`` (default: all in the manifest ``doc``) as float32 arrays
    (rows, dim), row ``k`` holding key ``k``."""
    specs = {t["name"]: t for t in doc["tables"]}
    wanted = list(specs) if names is None else list(names)
    missing = [n for n in wanted if n not in specs]
    if missing:
        raise CheckpointError(f"{step_dir}: the checkpoint has no table {missing[0]!r}")
    out = {n: np.empty((int(specs[n]["rows"]), int(specs[n]["dim"])), np.float32)
           for n in wanted}
    entries = doc["servers"]
    files = [ServerFile(step_dir / server_file(e["index"]), e) for e in entries]
    try:
        pmap = PartitionMap(files[0].read("owner"), len(entries))
        for name, table in out.items():
            layout = saved_layout(files, name, table.shape[0], pmap)
            for s, f in enumerate(files):
                for starts, lengths, keys in held_runs(layout, s):
                    buf = np.empty((keys.size, table.shape[1]), np.float32)
                    dst = np.cumsum(lengths) - lengths
                    f.read_runs(f"tables/{name}/rows", starts, dst, lengths, buf)
                    table[keys] = buf
    finally:
        for f in files:
            f.close()
    return out
