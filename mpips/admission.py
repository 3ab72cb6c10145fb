"""Which rows of a sparse table have their own parameters: feature admission and
eviction, as pure decisions over per-row counts and steps. No MPI.

A server keeps, beside every row of a sparse table, how many times its key was seen
while not admitted (``count``: the cells of training batches that held it, which pushes
carry as sightings) and the last step that touched it (``last``; -1: the row holds its
initial values). With ``--min-count N`` a key is admitted once it has been seen ``N``
times, after the step that brings its count there; with ``--admit-probability P`` each step
that sees a key not admitted admits it with probability ``P``, drawn from (seed, key,
step), so the outcome does not depend on which server holds the row. With
``--evict-after E``, a sweep every ``max(1, E // 8)`` steps resets rows that no step
touched for ``E`` steps or more. Everything depends only on the rows' own history and
the step, so BSP stays deterministic across server counts and moves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ring import mix64

COUNT, LAST = 0, 1          # columns of a table's per-row record (int32)
COUNT_MAX = np.iinfo(np.int32).max      # counts stop there (a hot key in an endless stream)


@dataclass(frozen=True)
class RowPolicy:
    """Admission and eviction settings (``TrainConfig``'s ``min_count``,
    ``admit_probability``, ``evict_after``, ``seed``)."""

    min_count: int = 0
    admit_probability: float = 1.0
    evict_after: int = 0
    seed: int = 0

    @classmethod
    def of(cls, cfg) -> "RowPolicy":
        return cls(cfg.min_count, cfg.admit_probability, cfg.evict_after, cfg.seed)

    @property
    def admitting(self) -> bool:
        return self.min_count > 0 or self.admit_probability < 1

    @property
    def tracking(self) -> bool:
        """Rows need their counts and last steps kept."""
        return self.admitting or self.evict_after > 0

    def admits(self, counts: np.ndarray, keys: np.ndarray, step: int) -> np.ndarray:
        """Which keys not yet admitted, seen ``counts`` times after ``step``, this step
        admits."""
        ok = counts >= self.min_count
        if self.admit_probability < 1:
            ok &= draw(self.seed, keys, step) < self.admit_probability
        return ok

    @property
    def sweep_every(self) -> int:
        return max(1, self.evict_after // 8)

    def sweeps(self, step: int) -> bool:
        """Does the server look for rows to evict after applying ``step``?"""
        return self.evict_after > 0 and step % self.sweep_every == 0

    def stale(self, last: np.ndarray, step: int) -> np.ndarray:
        """Rows last touched at ``last`` that are due for eviction after ``step``."""
        return (last >= 0) & (step - last.astype(np.int64) >= self.evict_after)


def new_record(rows: int) -> np.ndarray:
    """Per-row records of rows at their initial values: count 0, last step -1."""
    out = np.zeros((rows, 2), dtype=np.int32)
    out[:, LAST] = -1
    return out


def add_counts(counts: np.ndarray, more: np.ndarray) -> np.ndarray:
    """``counts + more`` as int32 counts, held at ``COUNT_MAX`` instead of wrapping."""
    return np.minimum(counts.astype(np.int64) + more, COUNT_MAX).astype(np.int32)


def draw(seed: int, keys: np.ndarray, step: int) -> np.ndarray:
    """Uniform numbers in [0, 1), one per key, from (seed, key, step) alone."""
    with np.errstate(over="ignore"):
        x = np.asarray(keys, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= mix64(np.uint64(seed) ^ (np.uint64(step) * np.uint64(0xD1B54A32D192ED03)))
    return (mix64(x) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
