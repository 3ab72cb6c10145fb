"""Feature hashing in two steps, so text and prepared shards give the same table rows:
(column, raw value) -> a 64-bit id (``ids``, fixed by the seed, what shards store), then
id -> table row (``FieldHashing.rows``, from the table sizes chosen at train time)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ring import mix64

MISSING = np.uint64(0xFFFFFFFFFFFFFFFF)   # raw value standing for an empty field
PAD_ID = np.uint64(0xFFFFFFFFFFFFFFFF)    # id of an unused slot (libSVM rows are padded)
COUNT_BASE = np.uint64(1 << 32)  # keeps negative counts' buckets clear of MISSING
GOLDEN = np.uint64(0x9E3779B97F4A7C15)   # salts: column * GOLDEN + seed


def bucketize(values: np.ndarray) -> np.ndarray:
    """Integer counts -> small bucket ids: values <= 3 kept, larger ones by half-octaves."""
    v = np.asarray(values, dtype=np.int64)
    out = v.copy()
    big = v > 3
    out[big] = 2 + np.floor(2.0 * np.log2(v[big].astype(np.float64))).astype(np.int64)
    return out


def encode_counts(counts: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Raw values of count fields: their bucket, or ``MISSING`` where the field is empty."""
    buckets = (bucketize(counts) + int(COUNT_BASE)).astype(np.uint64)
    return np.where(present, buckets, MISSING)


FIELD_NAMES = tuple(f"I{i}" for i in range(1, 14)) + tuple(f"C{i}" for i in range(1, 27))


def salts(columns: np.ndarray, seed: int) -> np.ndarray:
    """The salt of each column (or libFFM field) number: distinct values hash apart."""
    with np.errstate(over="ignore"):
        return mix64(np.asarray(columns, dtype=np.uint64) * GOLDEN + np.uint64(seed))


def hash_ids(raw: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """Raw uint64 values -> 64-bit ids, each value mixed with its (broadcast) salt."""
    return mix64(np.asarray(raw).astype(np.uint64, copy=False) ^ salt)


@dataclass(frozen=True)
class FieldHashing:
    """Where each field's ids land in the table: the shared range ``[0, shared_rows)``, or
    buckets of the field's own placed after it (``own[f] > 0``). With ``pad``, the last
    row is reserved for ``PAD_ID`` (padded slots, whose value is 0)."""

    shared_rows: int
    seed: int = 0
    own: tuple[int, ...] = ()            # per field; 0 or absent: the shared range
    pad: bool = False

    @property
    def total_rows(self) -> int:
        return self.shared_rows + sum(self.own) + int(self.pad)

    def ids(self, raw: np.ndarray) -> np.ndarray:
        """Raw values (n, fields), each column salted by its number and the seed."""
        return hash_ids(raw, salts(np.arange(np.shape(raw)[1]), self.seed))

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Ids (n, fields) -> int64 table rows: ``id % size + start`` per field."""
        ids = np.asarray(ids, dtype=np.uint64)
        own = np.zeros(ids.shape[1], dtype=np.int64)
        own[:len(self.own)] = self.own
        size = np.where(own > 0, own, self.shared_rows).astype(np.uint64)
        start = np.where(own > 0, self.shared_rows + np.cumsum(own) - own, 0)
        if (size & (size - np.uint64(1)) == 0).all():       # same result, much faster
            out = (ids & (size - np.uint64(1))).astype(np.int64) + start
        else:
            out = (ids % size).astype(np.int64) + start
        if self.pad:
            out[ids == PAD_ID] = self.total_rows - 1
        return out

    def keys(self, raw: np.ndarray) -> np.ndarray:
        """Hash raw values (n, fields) -- each field with its own salt -- into table keys."""
        return self.rows(self.ids(raw))
