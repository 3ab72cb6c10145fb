"""The built-in Criteo-shaped synthetic CTR data, with a known best achievable AUC.

13 count fields and 26 categorical fields; categories are Zipf-distributed and labels are
drawn from a hidden logistic model over the same (bucketised) features, so the generator's
own click probability gives the oracle AUC. Every value is a hash of (seed, row, field): any
row range is generated alone, identically, whoever generates it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Iterator, Optional

import numpy as np

from ..ring import mix64
from . import Batch, n_batches
from .hashing import FieldHashing, encode_counts

NUMERIC, CATEGORICAL = 13, 26
_U53 = float(2 ** -53)


def _uniform(seed: int, rows: np.ndarray, stream: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1) for (seed, row, stream)."""
    with np.errstate(over="ignore"):
        x = mix64(rows.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                  ^ mix64(np.uint64(seed) * np.uint64(1 << 20) + np.uint64(stream)))
    return (x >> np.uint64(11)).astype(np.float64) * _U53


def _normal(seed: int, keys: np.ndarray, stream: int) -> np.ndarray:
    u1 = _uniform(seed, keys, 2 * stream + 1)
    u2 = _uniform(seed, keys, 2 * stream + 2)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


@dataclass(frozen=True)
class SyntheticCTR:
    """A deterministic synthetic dataset of ``rows`` rows (train and test are row ranges)."""

    rows: int = 500_000
    hashing: FieldHashing = FieldHashing(1 << 21)
    seed: int = 0
    zipf: float = 1.5
    logit_scale: float = 0.2
    bias: float = -1.3

    fields = NUMERIC + CATEGORICAL
    bad_lines = 0

    def cardinalities(self) -> np.ndarray:
        """Distinct categories per categorical field: 4 to 20,000, spread geometrically."""
        return np.round(np.geomspace(4, 20_000, CATEGORICAL)).astype(np.int64)

    @cached_property
    def _zipf_cdfs(self) -> list[np.ndarray]:
        """Each field's Zipf CDF over its categories (built once: 60k entries)."""
        cdfs = []
        for c in self.cardinalities():
            p = 1.0 / np.arange(1, c + 1, dtype=np.float64) ** self.zipf
            cdfs.append(np.cumsum(p) / p.sum())
        return cdfs

    def raw(self, start: int, stop: int) -> np.ndarray:
        """Raw feature values (n, 39) as uint64: bucketised counts, then category ranks."""
        rows = np.arange(start, stop, dtype=np.int64)
        raw = np.empty((rows.size, self.fields), dtype=np.uint64)
        for f in range(NUMERIC):
            counts = np.floor(np.exp(1.5 + 1.5 * _normal(self.seed, rows, 100 + f))) - 1
            present = _uniform(self.seed, rows, 200 + f) >= 0.05 * (f % 4)
            raw[:, f] = encode_counts(counts, present)
        for j, cdf in enumerate(self._zipf_cdfs):
            u = _uniform(self.seed, rows, 300 + j)
            raw[:, NUMERIC + j] = np.minimum(np.searchsorted(cdf, u), cdf.size - 1)
        return raw

    def hidden_logit(self, raw: np.ndarray) -> np.ndarray:
        """The hidden model: a bias plus one Gaussian weight per (field, value)."""
        z = np.full(raw.shape[0], self.bias)
        for f in range(self.fields):
            with np.errstate(over="ignore"):
                key = mix64(raw[:, f] ^ np.uint64(f) * np.uint64(0xD6E8FEB86659FD93))
            z += self.logit_scale * _normal(self.seed + 7, key.view(np.int64), f)
        return z

    def batch(self, start: int, stop: int) -> Batch:
        raw = self.raw(start, stop)
        p = 1.0 / (1.0 + np.exp(-self.hidden_logit(raw)))
        labels = (_uniform(self.seed, np.arange(start, stop), 999) < p).astype(np.float32)
        keys = self.hashing.keys(raw)
        vals = np.ones(keys.shape, dtype=np.float32)
        return Batch(keys, vals, labels, p)

    def batches(self, start: int, stop: int, batch_size: int,
                order: Optional[Iterable[int]] = None) -> Iterator[Batch]:
        """Batches ``order`` (default: all, in turn) of rows [start, stop)."""
        for b in range(n_batches(stop - start, batch_size)) if order is None else order:
            first = start + b * batch_size
            yield self.batch(first, min(first + batch_size, stop))
