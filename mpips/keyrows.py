"""Rows by key for a worker's per-key state (error-feedback residuals, the pull cache):
a pool of rows behind a numba hash map (``kernels.keymap``), each row with an age. Pure,
no MPI.
"""
from __future__ import annotations

import numpy as np

from .kernels.keymap import (keymap_add_into, keymap_find, keymap_put, keymap_rehash,
                             keymap_take)

INITIAL_SLOTS = 1 << 20        # pool rows at most to start with (NumPy's zeros are touched
                               # lazily); past them it doubles as keys arrive


class KeyedRows:
    """Rows by key (``kernels.keymap``), each with an age (the step or version it was
    written at), for at most about ``capacity`` keys (the owner enforces it). With
    ``drop_zero`` a zero row removes its key (residuals: nothing to keep)."""

    def __init__(self, dim: int, capacity: int, drop_zero: bool = True) -> None:
        self.dim, self.capacity, self.drop_zero = dim, capacity, drop_zero
        self.size = 0
        self._alloc(min(INITIAL_SLOTS, 1 << max(4, (capacity - 1).bit_length())))

    def _alloc(self, slots: int) -> None:
        """Empty arrays for ``slots`` rows (a power of two: the hash map masks by it)."""
        self.pkeys = np.full(slots, -1, dtype=np.int64)
        self.prows = np.zeros((slots, self.dim), dtype=np.float32)
        self.page = np.zeros(slots, dtype=np.int64)
        self.free = np.arange(slots - 1, -1, -1, dtype=np.int64)
        self.nfree = np.array([slots], dtype=np.int64)
        self.hkeys = np.full(2 * slots, -1, dtype=np.int64)
        self.hslot = np.zeros(2 * slots, dtype=np.int64)

    def __len__(self) -> int:
        return self.size

    def _room(self, more: int) -> None:
        """Grow the pool (doubling) so that ``more`` keys fit: rows keep their slots, the
        hash map is rebuilt in one kernel call."""
        free = int(self.nfree[0])
        if free >= more:
            return
        old = self.pkeys.size
        slots = old
        while slots - self.size < more:
            slots *= 2
        pkeys, prows, page, spare = self.pkeys, self.prows, self.page, self.free[:free]
        self._alloc(slots)
        self.pkeys[:old], self.prows[:old], self.page[:old] = pkeys, prows, page
        self.free[slots - old:slots - old + free] = spare
        self.nfree[0] = slots - old + free
        keymap_rehash(self.hkeys, self.hslot, self.pkeys)

    def slots_of(self, keys: np.ndarray) -> np.ndarray:
        """Each key's pool slot, -1 for keys without a row."""
        return keymap_find(self.hkeys, self.hslot, np.ascontiguousarray(keys, np.int64))

    def add_into(self, slots: np.ndarray, rows: np.ndarray) -> None:
        """``rows[i] += `` the row at ``slots[i]`` (float32; nothing where it is -1)."""
        keymap_add_into(self.prows, slots, rows)

    def put(self, keys: np.ndarray, rows: np.ndarray, age: int | np.ndarray) -> None:
        """Set the rows of ``keys`` (unique), with ``age`` (one for all, or one each)."""
        self._room(keys.size)
        self._put(keys, rows, np.broadcast_to(np.asarray(age, np.int64), keys.shape))

    def _put(self, keys: np.ndarray, rows: np.ndarray, ages: np.ndarray) -> None:
        self.size += keymap_put(self.hkeys, self.hslot, self.pkeys, self.prows, self.page,
                                self.free, self.nfree, np.ascontiguousarray(keys, np.int64),
                                np.ascontiguousarray(rows, np.float32),
                                np.ascontiguousarray(ages, np.int64), self.drop_zero)

    def rows_at(self, slots: np.ndarray) -> np.ndarray:
        """The rows at pool ``slots`` (a copy)."""
        return self.prows[slots]

    def ages_at(self, slots: np.ndarray) -> np.ndarray:
        """The ages at pool ``slots`` (a copy)."""
        return self.page[slots]

    def age_by(self, slots: np.ndarray, amount: int) -> None:
        """Make the rows at pool ``slots`` (-1: none) ``amount`` older."""
        self.page[slots[slots >= 0]] -= amount

    def take(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Remove the keys at pool ``slots``; returns their keys and rows."""
        keys = self.pkeys[slots].copy()
        rows = np.empty((slots.size, self.dim), dtype=np.float32)
        keymap_take(self.hkeys, self.hslot, self.pkeys, self.prows, self.free, self.nfree,
                    slots, rows)
        self.size -= slots.size
        return keys, rows

    def oldest(self, count: int, exclude: np.ndarray) -> np.ndarray:
        """Pool slots of the ``count`` keys written longest ago (ties: smaller keys first),
        leaving out the slots ``exclude``."""
        live = np.flatnonzero(self.pkeys >= 0)
        if exclude.size:
            live = live[~np.isin(live, exclude)]
        if count >= live.size:
            return live
        order = np.lexsort((self.pkeys[live], self.page[live]))
        return live[order[:count]]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row in key order: keys, rows and ages."""
        live = np.flatnonzero(self.pkeys >= 0)
        live = live[np.argsort(self.pkeys[live], kind="stable")]
        return self.pkeys[live].copy(), self.prows[live].copy(), self.page[live].copy()

    @classmethod
    def of_arrays(cls, dim: int, capacity: int, keys: np.ndarray, rows: np.ndarray,
                  ages: np.ndarray) -> "KeyedRows":
        """A store of residuals holding ``arrays()`` as saved (a checkpoint)."""
        store = cls(dim, capacity)
        store.put(keys, rows, ages)
        return store
