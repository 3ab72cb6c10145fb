"""Rows by key for a worker's per-key state (error-feedback residuals, the pull cache).
Pure, no MPI.

``KeyedRows`` keeps a pool of rows behind a numba hash map (``kernels.keymap``), each row
with an age, as many as keys arrive up to a bound. ``DirectRows`` keeps a row for every
key of a table (slot = key: one memory access a key, no hashing, nothing to grow) and no
ages; it serves residuals where a row per table key takes no more memory than the hash map
would at its bound (``residual_store``): LR's one-value rows, dense tables. On the built-in
data (a worker's one-epoch run of steps of about 4,900 keys, fastest of 5) LR's ``fp16``
error feedback takes 0.18 ms a step with it, 0.43 ms before (the hash map, and the former
``fp16`` coder).
"""
from __future__ import annotations

import numpy as np

from .kernels.keymap import (direct_find_add, direct_put, keymap_find, keymap_find_add,
                             keymap_put, keymap_rehash, keymap_take)

INITIAL_SLOTS = 1 << 12        # pool rows at most to start with; it doubles as keys arrive,
                               # so the hash table stays as small (cache-warm) as its keys


class KeyedRows:
    """Rows by key (``kernels.keymap``), each with an age (the step or version it was
    written at), for at most about ``capacity`` keys (the owner enforces it). With
    ``drop_zero`` a zero row removes its key (residuals: nothing to keep)."""

    def __init__(self, dim: int, capacity: int, drop_zero: bool = True) -> None:
        self.dim, self.capacity, self.drop_zero = dim, capacity, drop_zero
        self.clear()

    @staticmethod
    def bytes_per_key(dim: int) -> int:
        """Memory a key takes at the bound: its pool row, key, age and free-list entry,
        and two hash-map pairs (the map is at most half full). The pool's rows are a
        power of two, so a bound just past one takes up to twice this."""
        return 4 * dim + 3 * 8 + 2 * 16

    def clear(self) -> None:
        """Forget every key."""
        self.size = 0
        self._alloc(min(INITIAL_SLOTS, 1 << max(4, (self.capacity - 1).bit_length())))

    def _alloc(self, slots: int) -> None:
        """Empty arrays for ``slots`` rows (a power of two: the hash map masks by it)."""
        self.pkeys = np.full(slots, -1, dtype=np.int64)
        self.prows = np.zeros((slots, self.dim), dtype=np.float32)
        self.page = np.zeros(slots, dtype=np.int64)
        self.free = np.arange(slots - 1, -1, -1, dtype=np.int64)
        self.nfree = np.array([slots], dtype=np.int64)
        self.htab = np.full((2 * slots, 2), -1, dtype=np.int64)

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
        keymap_rehash(self.htab, self.pkeys)

    def slots_of(self, keys: np.ndarray) -> np.ndarray:
        """Each key's pool slot, -1 for keys without a row."""
        return keymap_find(self.htab, np.ascontiguousarray(keys, np.int64))

    def add_rows(self, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``rows[i] +=`` the row of ``keys[i]`` where it has one (float32, in place, in
        the same pass that finds them); returns each key's pool slot, -1 for none."""
        return keymap_find_add(self.htab, self.prows, np.ascontiguousarray(keys, np.int64),
                               rows)

    def put(self, keys: np.ndarray, rows: np.ndarray, age: int | np.ndarray,
            slots: np.ndarray | None = None) -> None:
        """Set the rows of ``keys`` (unique), with ``age`` (one for all, or one each).
        ``slots``: the keys' pool slots as ``add_rows`` found them, which spares looking up
        again the keys that had one; none of those keys may have been removed since (a
        slot freed or reused would be overwritten)."""
        keys = np.ascontiguousarray(keys, np.int64)
        self._room(keys.size if slots is None else int(np.count_nonzero(slots < 0)))
        self.size += keymap_put(
            self.htab, self.pkeys, self.prows, self.page, self.free, self.nfree, keys,
            np.full(keys.size, -1, np.int64) if slots is None else slots,
            np.ascontiguousarray(rows, np.float32),
            np.ascontiguousarray(np.broadcast_to(np.asarray(age, np.int64), keys.shape)),
            self.drop_zero)

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
        keymap_take(self.htab, self.pkeys, self.prows, self.free, self.nfree, slots, rows)
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


class DirectRows:
    """Residual rows of a table's every key (slot = key), live where not zero; no ages.
    Its ``capacity`` is the table's rows, so ``residuals.feedback`` never has a key to let
    go (its live keys and a step's new ones are distinct keys of the table)."""

    def __init__(self, dim: int, rows: int) -> None:
        self.dim, self.capacity = dim, rows
        self.prows = np.zeros((rows, dim), dtype=np.float32)   # pages touched as keys come
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def clear(self) -> None:
        """Forget every key (fresh zeros: no page is touched until a key comes)."""
        self.prows = np.zeros(self.prows.shape, dtype=np.float32)
        self.size = 0

    def add_rows(self, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """As ``KeyedRows.add_rows``: a key's slot is itself, -1 where it has no row.
        A key outside the table is a ``ValueError`` (the kernels index without checks)."""
        keys = np.ascontiguousarray(keys, np.int64)
        if keys.size and not 0 <= keys.min() <= keys.max() < self.capacity:
            raise ValueError(f"residual keys must lie in [0, {self.capacity})")
        return direct_find_add(self.prows, keys, rows)

    def put(self, keys: np.ndarray, rows: np.ndarray, age: int | np.ndarray,
            slots: np.ndarray | None = None) -> None:
        """As ``KeyedRows.put`` (a zero row removes its key); ``age`` is not kept."""
        keys = np.ascontiguousarray(keys, np.int64)
        if slots is None:
            slots = np.where(np.any(self.prows[keys] != 0, axis=1), keys, -1)
        self.size += direct_put(self.prows, keys, slots, np.ascontiguousarray(rows, np.float32))

    def take(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Remove the keys at ``slots`` (live); returns their keys and rows."""
        rows = self.prows[slots]
        self.prows[slots] = 0
        self.size -= slots.size
        return np.asarray(slots, np.int64).copy(), rows

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row in key order: keys, rows and ages (all 0: none are kept)."""
        live = np.flatnonzero(np.any(self.prows != 0, axis=1))
        return live.astype(np.int64), self.prows[live], np.zeros(live.size, np.int64)


ResidualStore = KeyedRows | DirectRows


def residual_store(dim: int, table_rows: int, capacity: int) -> ResidualStore:
    """A store for one table's residuals, bounded by ``capacity`` keys' memory: direct
    where a row per table key takes no more than the hash map at that bound."""
    if table_rows * 4 * dim <= capacity * KeyedRows.bytes_per_key(dim):
        return DirectRows(dim, table_rows)
    return KeyedRows(dim, capacity)
