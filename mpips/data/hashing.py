"""Feature hashing: (field, raw value) -> table key, and log2 buckets for counts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ring import mix64

MISSING = np.uint64(0xFFFFFFFFFFFFFFFF)   # raw value standing for an empty field
_COUNT_BASE = 1 << 32                      # keeps negative counts' buckets clear of MISSING


def bucketize(values: np.ndarray) -> np.ndarray:
    """Integer counts -> small bucket ids: values <= 3 kept, larger ones by half-octaves."""
    v = np.asarray(values, dtype=np.int64)
    out = v.copy()
    big = v > 3
    out[big] = 2 + np.floor(2.0 * np.log2(v[big].astype(np.float64))).astype(np.int64)
    return out


def encode_counts(counts: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Raw values of count fields: their bucket, or ``MISSING`` where the field is empty."""
    buckets = (bucketize(counts) + _COUNT_BASE).astype(np.uint64)
    return np.where(present, buckets, MISSING)


FIELD_NAMES = tuple(f"I{i}" for i in range(1, 14)) + tuple(f"C{i}" for i in range(1, 27))


@dataclass(frozen=True)
class FieldHashing:
    """Where each field's hashed values land in the table: the shared range
    ``[0, shared_rows)``, or buckets of the field's own placed after it (``own[f] > 0``)."""

    shared_rows: int
    seed: int = 0
    own: tuple[int, ...] = ()            # per field; 0 or absent: the shared range

    @property
    def total_rows(self) -> int:
        return self.shared_rows + sum(self.own)

    def keys(self, raw: np.ndarray) -> np.ndarray:
        """Hash raw values (n, fields) -- each field with its own salt -- into table keys."""
        raw = np.asarray(raw).astype(np.uint64, copy=False)
        fields = np.arange(raw.shape[1], dtype=np.uint64)
        with np.errstate(over="ignore"):
            salted = raw ^ mix64(fields * np.uint64(0x9E3779B97F4A7C15) + np.uint64(self.seed))
            h = mix64(salted)
        own = np.zeros(raw.shape[1], dtype=np.int64)
        own[:len(self.own)] = self.own
        size = np.where(own > 0, own, self.shared_rows).astype(np.uint64)
        start = np.where(own > 0, self.shared_rows + np.cumsum(own) - own, 0)
        return (h % size).astype(np.int64) + start
