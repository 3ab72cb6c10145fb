"""A key -> row map for per-key worker state (error-feedback residuals, the pull cache): an
open-addressing hash table (linear probing, backward-shift deletion, so no tombstones) over
a pool of rows. ``htab[p]`` is a pair (key, pool slot), key -1 where empty: one cache line
a probe. Pool slot ``s`` holds key ``pkeys[s]`` (-1: free), its row ``prows[s]`` and the
step it was last written ``page[s]``; ``free[:nfree[0]]`` are the free slots. A key keeps
its pool slot until it is removed, so a step finds its keys' slots once
(``keymap_find_add``) and writes its rows back through them (``keymap_put``). The caller
keeps the table at most half full and the pool large enough (``keyrows.KeyedRows``).

A direct pool (``keyrows.DirectRows``) has no table: a row per key of the parameter table,
slot = key, live where the row is not zero (a residual store: a zero residual is none).
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .varint import varint_decode, varint_encode

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@nb.njit(cache=True, nogil=True, inline="always")
def _home(key: np.int64, bits: int) -> int:
    return np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(64 - bits))


@nb.njit(cache=True, nogil=True)
def _bits(size: int) -> int:
    bits = 0
    while (1 << bits) < size:
        bits += 1
    return bits


@nb.njit(cache=True, nogil=True)
def _position(htab: np.ndarray, key: np.int64, bits: int) -> int:
    """Where ``key`` is in the table, or the empty position where it would go (-1 - it)."""
    mask = htab.shape[0] - 1
    j = _home(key, bits)
    while True:
        k = htab[j, 0]
        if k == key:
            return j
        if k == -1:
            return -1 - j
        j = (j + 1) & mask


@nb.njit(cache=True, nogil=True)
def _delete_at(htab: np.ndarray, i: int, bits: int) -> None:
    """Empty position ``i``, shifting back the entries that probed past it."""
    mask = htab.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        if htab[j, 0] == -1:
            break
        k = _home(htab[j, 0], bits)
        stays = (i < k <= j) if i <= j else (i < k or k <= j)
        if not stays:
            htab[i, 0] = htab[j, 0]
            htab[i, 1] = htab[j, 1]
            i = j
    htab[i, 0] = -1


@nb.njit(cache=True, nogil=True)
def _release(htab: np.ndarray, pkeys: np.ndarray, free: np.ndarray, nfree: np.ndarray,
             s: int, bits: int) -> None:
    """Remove the key at live pool slot ``s``."""
    _delete_at(htab, _position(htab, pkeys[s], bits), bits)
    pkeys[s] = -1
    free[nfree[0]] = s
    nfree[0] += 1


@nb.njit(cache=True, nogil=True)
def keymap_find(htab: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Pool slot of each key, -1 where it has none."""
    bits = _bits(htab.shape[0])
    out = np.empty(keys.size, dtype=np.int64)
    for i in range(keys.size):
        p = _position(htab, keys[i], bits)
        out[i] = htab[p, 1] if p >= 0 else -1
    return out


@nb.njit(cache=True, nogil=True)
def keymap_find_add(htab: np.ndarray, prows: np.ndarray, keys: np.ndarray,
                    rows: np.ndarray) -> np.ndarray:
    """Pool slot of each key (-1 where it has none), and ``rows[i] +=`` its row."""
    bits = _bits(htab.shape[0])
    out = np.empty(keys.size, dtype=np.int64)
    for i in range(keys.size):
        p = _position(htab, keys[i], bits)
        s = htab[p, 1] if p >= 0 else -1
        out[i] = s
        if s >= 0:
            for j in range(rows.shape[1]):
                rows[i, j] += prows[s, j]
    return out


@nb.njit(cache=True, nogil=True)
def keymap_put(htab: np.ndarray, pkeys: np.ndarray, prows: np.ndarray, page: np.ndarray,
               free: np.ndarray, nfree: np.ndarray, keys: np.ndarray, slots: np.ndarray,
               rows: np.ndarray, ages: np.ndarray, drop_zero: bool) -> int:
    """Set each key's row and age (with ``drop_zero`` a zero row removes the key);
    ``slots[i]`` is key ``i``'s pool slot as found, -1 for none (then it is looked up: a
    key new to the table). Returns the change in live keys."""
    bits = _bits(htab.shape[0])
    d = rows.shape[1]
    change = 0
    for i in range(keys.size):
        zero = drop_zero
        for j in range(d if drop_zero else 0):
            if rows[i, j] != 0:
                zero = False
                break
        s, p = slots[i], 0
        if s < 0:
            p = _position(htab, keys[i], bits)
            s = htab[p, 1] if p >= 0 else -1
        if zero:
            if s >= 0:
                _release(htab, pkeys, free, nfree, s, bits)
                change -= 1
            continue
        if s < 0:
            nfree[0] -= 1
            s = free[nfree[0]]
            htab[-1 - p, 0] = keys[i]
            htab[-1 - p, 1] = s
            pkeys[s] = keys[i]
            change += 1
        for j in range(d):
            prows[s, j] = rows[i, j]
        page[s] = ages[i]
    return change


@nb.njit(cache=True, nogil=True)
def keymap_take(htab: np.ndarray, pkeys: np.ndarray, prows: np.ndarray, free: np.ndarray,
                nfree: np.ndarray, slots: np.ndarray, out: np.ndarray) -> None:
    """Copy the rows of pool ``slots`` (all live) into ``out`` and remove their keys."""
    bits = _bits(htab.shape[0])
    for i in range(slots.size):
        s = slots[i]
        for j in range(prows.shape[1]):
            out[i, j] = prows[s, j]
        _release(htab, pkeys, free, nfree, s, bits)


@nb.njit(cache=True, nogil=True)
def keymap_rehash(htab: np.ndarray, pkeys: np.ndarray) -> None:
    """Fill an empty table ``htab`` (keys all -1) with every live pool slot's key."""
    bits = _bits(htab.shape[0])
    for s in range(pkeys.size):
        if pkeys[s] >= 0:
            p = -1 - _position(htab, pkeys[s], bits)
            htab[p, 0] = pkeys[s]
            htab[p, 1] = s


# ---- direct pools: a row per table key (slot = key), live where the row is not zero ----
@nb.njit(cache=True, nogil=True)
def direct_find_add(prows: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each key's slot (the key; -1 where its row is zero) and ``rows[i] +=`` its row."""
    out = np.empty(keys.size, dtype=np.int64)
    for i in range(keys.size):
        k = keys[i]
        live = False
        for j in range(rows.shape[1]):
            x = prows[k, j]
            live |= x != 0
            rows[i, j] += x
        out[i] = k if live else -1
    return out


@nb.njit(cache=True, nogil=True)
def direct_put(prows: np.ndarray, keys: np.ndarray, slots: np.ndarray,
               rows: np.ndarray) -> int:
    """Set each key's row (``slots[i]``: its slot as found, -1 where its row was zero);
    returns the change in live keys."""
    change = 0
    for i in range(keys.size):
        k = keys[i]
        live = False
        for j in range(rows.shape[1]):
            prows[k, j] = rows[i, j]
            live |= rows[i, j] != 0
        change += np.int64(live) - np.int64(slots[i] >= 0)
    return change


def warm_up() -> None:
    """Compile (or load) this module's kernels and the varint coder's, on tiny inputs."""
    keys = np.array([2, 5], dtype=np.int64)
    buf = np.empty(20, dtype=np.uint8)
    varint_decode(buf[:varint_encode(keys, buf)], np.empty(2, dtype=np.int64))
    htab = np.full((8, 2), -1, np.int64)
    pkeys, page = np.full(4, -1, np.int64), np.zeros(4, np.int64)
    prows = np.zeros((4, 1), np.float32)
    free, nfree = np.arange(4, dtype=np.int64), np.array([4], np.int64)
    rows = np.ones((2, 1), np.float32)
    none = np.full(2, -1, np.int64)
    keymap_put(htab, pkeys, prows, page, free, nfree, keys, none, rows,
               np.zeros(2, np.int64), True)
    slots = keymap_find_add(htab, prows, keys, rows)
    keymap_find(htab, keys)
    keymap_take(htab, pkeys, prows, free, nfree, slots, rows)
    keymap_rehash(np.full((8, 2), -1, np.int64), pkeys)
    found = direct_find_add(prows, keys[:1] * 0, rows[:1])
    direct_put(prows, keys[:1] * 0, found, rows[:1])
