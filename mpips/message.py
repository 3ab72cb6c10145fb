"""The push message: what a worker sends one server for one step, and its byte layout.

A message is one contiguous buffer: a header of int64 words (magic, worker, step, flags,
map epoch, then per table its id, row count, the version its rows were pulled at and the
codec of its rows), then per table the shard offsets (int64) and the gradient rows. Only
``encode`` and ``decode`` know this layout: they are the seam where a codec sits (today
every table's rows travel as raw float32, codec ``RAW``). Decoding makes views into the
buffer, nothing is copied. Pure: no MPI.

The map epoch says which placement the offsets were routed with, so a server can refuse
a message built for another one instead of updating the wrong rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .errors import ProtocolError

MAGIC = 0x4D50505301          # "MPPS", layout version 1
FLAG_LAST = 1                 # the worker's final push: it sends nothing more
FLAG_MARK = 2                 # no rows: the worker paused before step ``step`` (the label)
RAW = 0                       # codec: float32 rows as they are
_HEAD, _PART = 6, 4           # header words, and words per table


@dataclass
class TablePart:
    """One table's rows in a push: shard ``offsets`` and their gradient ``rows``.

    When encoding, ``order`` (if given) picks the rows: row ``i`` of the part is
    ``rows[order[i]]``, so routing and packing take one copy."""

    table: int
    version: int                          # the server's version when the rows were pulled
    offsets: np.ndarray                   # (n,) int64
    rows: np.ndarray                      # (n, dim) float32, or the source picked by order
    order: Optional[np.ndarray] = None
    codec: int = RAW

    def __len__(self) -> int:
        return int(self.offsets.size)


@dataclass
class PushMessage:
    """A worker's step for one server: a part per table (all tables, in order), or none
    for a mark."""

    worker: int
    step: int
    flags: int
    epoch: int
    parts: list[TablePart] = field(default_factory=list)

    @property
    def last(self) -> bool:
        return bool(self.flags & FLAG_LAST)

    @property
    def mark(self) -> bool:
        return bool(self.flags & FLAG_MARK)

    @property
    def rows(self) -> int:
        return sum(len(p) for p in self.parts)


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _sizes(counts: Sequence[int], dims: Sequence[int]) -> list[tuple[int, int]]:
    """Bytes of each part's offsets and rows, each rounded up to 8."""
    return [(8 * n, _pad8(4 * n * d)) for n, d in zip(counts, dims)]


def encode(msg: PushMessage, dims: Sequence[int]) -> np.ndarray:
    """The message as one uint8 buffer (``dims``: every table's row width)."""
    head = [MAGIC, msg.worker, msg.step, msg.flags, msg.epoch, len(msg.parts)]
    for p in msg.parts:
        head += [p.table, len(p), p.version, p.codec]
    sizes = _sizes([len(p) for p in msg.parts], [dims[p.table] for p in msg.parts])
    start = 8 * len(head)
    buf = np.empty(start + sum(a + b for a, b in sizes), dtype=np.uint8)
    buf[:start].view(np.int64)[:] = head
    for p, (a, b) in zip(msg.parts, sizes):
        if p.codec != RAW:
            raise ProtocolError(f"table {p.table}: unknown codec {p.codec}")
        buf[start:start + a].view(np.int64)[:] = p.offsets
        rows = buf[start + a:start + a + b].view(np.float32)[:len(p) * dims[p.table]]
        rows = rows.reshape(len(p), dims[p.table])
        if p.order is None:
            rows[:] = p.rows
        else:
            np.take(p.rows, p.order, axis=0, out=rows)
        start += a + b
    return buf


def decode(buf: np.ndarray, dims: Sequence[int]) -> PushMessage:
    """A received buffer as a message whose parts are views into ``buf``; a buffer that
    does not follow the layout is a ``ProtocolError``."""
    if buf.size < 8 * _HEAD or int(buf[:8].view(np.int64)[0]) != MAGIC:
        raise ProtocolError(f"not a push message ({buf.size} bytes)")
    words = buf[:8 * _HEAD].view(np.int64)
    _, worker, step, flags, epoch, n = (int(w) for w in words)
    start = 8 * (_HEAD + _PART * n)
    if n > len(dims) or buf.size < start:
        raise ProtocolError(f"push from worker {worker}: {n} tables in a header of "
                            f"{buf.size} bytes, the job has {len(dims)}")
    meta = buf[8 * _HEAD:start].view(np.int64).reshape(n, _PART)
    if np.any(meta[:, 0] < 0) or np.any(meta[:, 0] >= len(dims)) or np.any(meta[:, 1] < 0):
        raise ProtocolError(f"push from worker {worker}: bad table entries {meta.tolist()}")
    counts, tables = meta[:, 1].tolist(), meta[:, 0].tolist()
    sizes = _sizes(counts, [dims[t] for t in tables])
    if buf.size != start + sum(a + b for a, b in sizes):
        raise ProtocolError(f"push from worker {worker}: {buf.size} bytes, its header "
                            f"describes {start + sum(a + b for a, b in sizes)}")
    parts = []
    for (table, count, version, codec), (a, b) in zip(meta.tolist(), sizes):
        if codec != RAW:
            raise ProtocolError(f"push from worker {worker}: table {table} has unknown "
                                f"codec {codec}")
        dim = dims[table]
        rows = buf[start + a:start + a + b].view(np.float32)[:count * dim].reshape(count, dim)
        parts.append(TablePart(table, version, buf[start:start + a].view(np.int64), rows))
        start += a + b
    return PushMessage(worker, step, flags, epoch, parts)


def mark(worker: int, label: int, epoch: int) -> PushMessage:
    """The message that tells a server this worker paused before step ``label``."""
    return PushMessage(worker, label, FLAG_MARK, epoch)
