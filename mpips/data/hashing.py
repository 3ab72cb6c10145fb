"""Feature hashing: (field, raw value) -> table key, and log2 buckets for counts."""
from __future__ import annotations

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


def feature_keys(raw: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Hash raw values (n, fields) -- each field hashed separately -- into ``[0, rows)``."""
    raw = np.asarray(raw).astype(np.uint64, copy=False)
    fields = np.arange(raw.shape[1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        salted = raw ^ mix64(fields * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed))
        h = mix64(salted)
    return (h % np.uint64(rows)).astype(np.int64)
