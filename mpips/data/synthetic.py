"""The built-in Criteo-shaped synthetic CTR data, with a known best achievable AUC.

13 count fields and 26 categorical fields. A field's categories follow a bounded power law
(Zipf-like, exponent ``zipf``) over its own number of values, 3 to 10 million spread
geometrically over the fields, so batches hold about as many distinct keys as real click
logs: per 1,024 and 4,096 rows, within 20 % of the Criteo Kaggle sample's (measured in
``benchmarks/README.md``; ``tests/test_data.py`` checks the generator). Labels are drawn
from a hidden logistic model over the same (bucketised) features in which a field's
``head`` most frequent values carry weights and rarer ones none (a value seen a few times
cannot be learnt), so the generator's own click probability gives the oracle AUC, and a
model can come near it. Every value is a hash of (seed, row, field): any row range is
generated alone, identically, whoever generates it.
"""
from __future__ import annotations

from dataclasses import dataclass
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
    zipf: float = 1.15
    logit_scale: float = 0.2
    bias: float = -1.3
    head: int = 100

    fields = NUMERIC + CATEGORICAL
    bad_lines = 0

    def cardinalities(self) -> np.ndarray:
        """Distinct values per categorical field: 3 to 10 million, spread geometrically,
        in a fixed mixed order (real logs' fields are not sorted by size)."""
        sizes = np.round(np.geomspace(3, 10_000_000, CATEGORICAL)).astype(np.int64)
        return sizes[np.random.default_rng(26).permutation(CATEGORICAL)]

    def raw(self, start: int, stop: int) -> np.ndarray:
        """Raw feature values (n, 39) as uint64: bucketised counts, then category ranks
        (0 the most frequent)."""
        rows = np.arange(start, stop, dtype=np.int64)
        raw = np.empty((rows.size, self.fields), dtype=np.uint64)
        for f in range(NUMERIC):
            counts = np.floor(np.exp(1.5 + 1.5 * _normal(self.seed, rows, 100 + f))) - 1
            present = _uniform(self.seed, rows, 200 + f) >= 0.05 * (f % 4)
            raw[:, f] = encode_counts(counts, present)
        a = 1.0 - self.zipf
        for j, n in enumerate(self.cardinalities()):
            # x has density ~ x**-zipf on [1, n + 1): inverse CDF of a uniform
            u = _uniform(self.seed, rows, 300 + j)
            x = (1.0 + u * ((n + 1.0) ** a - 1.0)) ** (1.0 / a)
            raw[:, NUMERIC + j] = np.clip(np.floor(x) - 1, 0, n - 1).astype(np.uint64)
        return raw

    def hidden_logit(self, raw: np.ndarray) -> np.ndarray:
        """The hidden model: a bias plus one Gaussian weight per (field, value), zero for
        categories past a field's ``head`` most frequent."""
        z = np.full(raw.shape[0], self.bias)
        for f in range(self.fields):
            with np.errstate(over="ignore"):
                key = mix64(raw[:, f] ^ np.uint64(f) * np.uint64(0xD6E8FEB86659FD93))
            w = self.logit_scale * _normal(self.seed + 7, key.view(np.int64), f)
            z += w if f < NUMERIC else np.where(raw[:, f] < self.head, w, 0.0)
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
