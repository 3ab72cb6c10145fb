"""The push message: what a worker sends one server for one step, and its byte layout.

A message is one contiguous buffer: a header of int64 words (magic, worker, step, flags,
map epoch, then per table its id, row count, the version its rows were pulled at, the
codec of its rows, the bytes of its keys, and its sightings' count and bytes), then per
table its shard offsets, sorted and delta-coded as varints (``codecs.encode_keys``), its
rows as the codec's fixed-width records (``codecs``: float32, fp16, bf16 or int8 with a
scale and offset per row), and its sightings, each padded to 8 bytes.

Sightings are the keys of the step that were not admitted when pulled (feature
admission) and how often the step's batch held each: the servers count them towards
``--min-count``. They travel apart from the rows, so a key is counted whether or not a
codec sends its (zero) gradient row: offsets delta-coded as the keys are, then the counts
as the varints of their running sums (strictly increasing, as counts are at least one).

Only ``encode`` and ``decode`` know this layout: the seam where the codecs sit. Decoding
gives float32 rows (a view into the buffer for raw rows), so the server's optimiser never
sees a codec. Pure: no MPI.

The map epoch says which placement the offsets were routed with, so a server can refuse
a message built for another one instead of updating the wrong rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .codecs import CODEC_NAMES, RAW, decode_keys, decode_rows, encode_keys, row_bytes
from .errors import ProtocolError
from .kernels.varint import varint_decode

MAGIC = 0x4D50505303          # "MPPS", layout version 3
FLAG_LAST = 1                 # the worker's final push: it sends nothing more
FLAG_MARK = 2                 # no rows: the worker paused before step ``step`` (the label)
_HEAD, _PART = 6, 7           # header words, and words per table
_PART_FLOAT32 = 4             # words per table of the uncoded layout (int64 keys, float32)
HEAD_BYTES = 8 * _HEAD


@dataclass
class TablePart:
    """One table's rows in a push: shard ``offsets`` (strictly increasing) and their
    gradient ``rows``.

    When encoding, ``rows`` are float32 rows for ``RAW`` or the codec's records (uint8,
    one row per key, ``codecs.encode_rows``), and ``order`` (if given) picks them: row
    ``i`` of the part is ``rows[order[i]]``, so routing and packing take one copy. Decoded
    parts hold float32 rows. ``seen`` (strictly increasing offsets) and ``seen_counts``
    (each at least one) are the part's sightings."""

    table: int
    version: int                          # the server's version when the rows were pulled
    offsets: np.ndarray                   # (n,) int64
    rows: np.ndarray                      # (n, dim) float32, or records; or picked by order
    order: Optional[np.ndarray] = None
    codec: int = RAW
    seen: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    seen_counts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

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


def float32_part_bytes(rows: int, dim: int) -> int:
    """Bytes of one table's part as it would be uncoded: its header words, int64 offsets
    and float32 rows (what byte accounting compares against)."""
    return 8 * _PART_FLOAT32 + 8 * rows + _pad8(4 * rows * dim)


def float32_bytes(counts: Sequence[int], dims: Sequence[int]) -> int:
    """Bytes of a whole message with these row counts and widths, uncoded."""
    return HEAD_BYTES + sum(float32_part_bytes(n, d) for n, d in zip(counts, dims))


def _records(p: TablePart) -> np.ndarray:
    """A part's rows as uint8 records, one row per entry."""
    rows = p.rows
    if rows.dtype != np.uint8:
        if p.codec != RAW or rows.dtype != np.float32:
            raise ValueError(f"table {p.table}: codec {p.codec} rows must be coded records")
        rows = np.ascontiguousarray(rows).view(np.uint8).reshape(rows.shape[0],
                                                                4 * rows.shape[1])
    return rows


def encode(msg: PushMessage, dims: Sequence[int]) -> np.ndarray:
    """The message as one uint8 buffer (``dims``: every table's row width)."""
    keys = [encode_keys(p.offsets) for p in msg.parts]
    seen = [_encode_sightings(p) for p in msg.parts]
    head = [MAGIC, msg.worker, msg.step, msg.flags, msg.epoch, len(msg.parts)]
    for p, k, v in zip(msg.parts, keys, seen):
        if p.codec not in CODEC_NAMES:
            raise ProtocolError(f"table {p.table}: unknown codec {p.codec}")
        head += [p.table, len(p), p.version, p.codec, k.size, p.seen.size, v.size]
    sizes = [(_pad8(k.size), _pad8(len(p) * row_bytes(p.codec, dims[p.table])), _pad8(v.size))
             for p, k, v in zip(msg.parts, keys, seen)]
    start = 8 * len(head)
    buf = np.zeros(start + sum(map(sum, sizes)), dtype=np.uint8)
    buf[:start].view(np.int64)[:] = head
    for p, k, v, (a, b, c) in zip(msg.parts, keys, seen, sizes):
        buf[start:start + k.size] = k
        width = row_bytes(p.codec, dims[p.table])
        out = buf[start + a:start + a + len(p) * width].reshape(len(p), width)
        records = _records(p)
        if p.order is None:
            out[:] = records
        else:
            np.take(records, p.order, axis=0, out=out)
        buf[start + a + b:start + a + b + v.size] = v
        start += a + b + c
    return buf


def _encode_sightings(p: TablePart) -> np.ndarray:
    """A part's sightings as bytes: the offsets' varints, then the running sums'."""
    counts = np.asarray(p.seen_counts, dtype=np.int64)
    if counts.shape != p.seen.shape or (counts.size and int(counts.min()) < 1):
        raise ValueError(f"table {p.table}: a count of at least one per sighting is needed")
    if not counts.size:
        return np.empty(0, np.uint8)
    return np.concatenate([encode_keys(p.seen), encode_keys(np.cumsum(counts) - 1)])


def _decode_sightings(buf: np.ndarray, count: int, where: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Sightings ``_encode_sightings`` wrote into ``buf``: (offsets, counts)."""
    if count == 0:
        if buf.size:
            raise ProtocolError(f"{where}: {buf.size} bytes of no sightings")
        return np.empty(0, np.int64), np.empty(0, np.int64)
    offsets = np.empty(count, np.int64)
    used = varint_decode(buf, offsets)
    if used < 0:
        raise ProtocolError(f"{where}: {buf.size} bytes do not hold {count} sightings")
    sums = decode_keys(buf[used:], count, where) + 1
    return offsets, np.diff(sums, prepend=0)


def decode(buf: np.ndarray, dims: Sequence[int]) -> PushMessage:
    """A received buffer as a message with float32 rows (views into ``buf`` for raw rows);
    a buffer that does not follow the layout is a ``ProtocolError``."""
    if buf.size < 8 * _HEAD or int(buf[:8].view(np.int64)[0]) != MAGIC:
        raise ProtocolError(f"not a push message ({buf.size} bytes)")
    words = buf[:8 * _HEAD].view(np.int64)
    _, worker, step, flags, epoch, n = (int(w) for w in words)
    start = 8 * (_HEAD + _PART * n)
    if n > len(dims) or buf.size < start:
        raise ProtocolError(f"push from worker {worker}: {n} tables in a header of "
                            f"{buf.size} bytes, the job has {len(dims)}")
    meta = buf[8 * _HEAD:start].view(np.int64).reshape(n, _PART)
    if np.any(meta[:, 0] < 0) or np.any(meta[:, 0] >= len(dims)) or np.any(meta[:, 1] < 0) \
            or np.any(meta[:, 4:] < 0):
        raise ProtocolError(f"push from worker {worker}: bad table entries {meta.tolist()}")
    for table, _, _, codec, *_ in meta.tolist():
        if codec not in CODEC_NAMES:
            raise ProtocolError(f"push from worker {worker}: table {table} has unknown "
                                f"codec {codec}")
    sizes = [(_pad8(kb), _pad8(count * row_bytes(codec, dims[table])), _pad8(sb))
             for table, count, _, codec, kb, _, sb in meta.tolist()]
    if buf.size != start + sum(map(sum, sizes)):
        raise ProtocolError(f"push from worker {worker}: {buf.size} bytes, its header "
                            f"describes {start + sum(map(sum, sizes))}")
    parts = []
    for (table, count, version, codec, kb, ns, sb), (a, b, c) in zip(meta.tolist(), sizes):
        dim, where = dims[table], f"push from worker {worker}, table {table}"
        offsets = decode_keys(buf[start:start + kb], count, where)
        records = buf[start + a:start + a + count * row_bytes(codec, dim)]
        rows = decode_rows(codec, records.reshape(count, row_bytes(codec, dim)), dim)
        seen, seen_counts = _decode_sightings(buf[start + a + b:start + a + b + sb], ns,
                                              f"{where}, sightings")
        parts.append(TablePart(table, version, offsets, rows, codec=codec, seen=seen,
                               seen_counts=seen_counts))
        start += a + b + c
    return PushMessage(worker, step, flags, epoch, parts)


def part_bytes(buf: np.ndarray, dims: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Per part of a message ``encode`` made (its header read, nothing checked): the table,
    its rows, the bytes of its keys and its bytes in all (header words, keys, rows and
    sightings, padded)."""
    n = int(buf[:8 * _HEAD].view(np.int64)[5])
    meta = buf[8 * _HEAD:8 * (_HEAD + _PART * n)].view(np.int64).reshape(n, _PART)
    return [(t, c, _pad8(kb),
             8 * _PART + _pad8(kb) + _pad8(c * row_bytes(codec, dims[t])) + _pad8(sb))
            for t, c, _, codec, kb, _, sb in meta.tolist()]


def mark(worker: int, label: int, epoch: int) -> PushMessage:
    """The message that tells a server this worker paused before step ``label``."""
    return PushMessage(worker, label, FLAG_MARK, epoch)
