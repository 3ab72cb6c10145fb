"""A key -> row map for per-key worker state (error-feedback residuals): an open-addressing
hash table (linear probing, backward-shift deletion, so no tombstones) over a pool of
rows. ``hkeys`` holds keys (-1: empty), ``hslot`` their pool slots; pool slot ``s`` holds
key ``pkeys[s]`` (-1: free), its row ``prows[s]`` and the step it was last written
``page[s]``; ``free[:nfree[0]]`` are the free slots. The caller keeps the table at most
half full and the pool large enough (``keyrows.KeyedRows``).
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
def _position(hkeys: np.ndarray, key: np.int64, bits: int) -> int:
    """Where ``key`` is in the table, or the empty position where it would go (-1 - it)."""
    mask = hkeys.size - 1
    j = _home(key, bits)
    while True:
        k = hkeys[j]
        if k == key:
            return j
        if k == -1:
            return -1 - j
        j = (j + 1) & mask


@nb.njit(cache=True, nogil=True)
def _delete_at(hkeys: np.ndarray, hslot: np.ndarray, i: int, bits: int) -> None:
    """Empty position ``i``, shifting back the entries that probed past it."""
    mask = hkeys.size - 1
    j = i
    while True:
        j = (j + 1) & mask
        if hkeys[j] == -1:
            break
        k = _home(hkeys[j], bits)
        stays = (i < k <= j) if i <= j else (i < k or k <= j)
        if not stays:
            hkeys[i] = hkeys[j]
            hslot[i] = hslot[j]
            i = j
    hkeys[i] = -1


@nb.njit(cache=True, nogil=True)
def keymap_find(hkeys: np.ndarray, hslot: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Pool slot of each key, -1 where it has none."""
    bits = _bits(hkeys.size)
    out = np.empty(keys.size, dtype=np.int64)
    for i in range(keys.size):
        p = _position(hkeys, keys[i], bits)
        out[i] = hslot[p] if p >= 0 else -1
    return out


@nb.njit(cache=True, nogil=True)
def keymap_add_into(prows: np.ndarray, slots: np.ndarray, rows: np.ndarray) -> None:
    """``rows[i] += prows[slots[i]]`` where a key has a slot."""
    for i in range(slots.size):
        s = slots[i]
        if s >= 0:
            for j in range(rows.shape[1]):
                rows[i, j] += prows[s, j]


@nb.njit(cache=True, nogil=True)
def keymap_put(hkeys: np.ndarray, hslot: np.ndarray, pkeys: np.ndarray, prows: np.ndarray,
               page: np.ndarray, free: np.ndarray, nfree: np.ndarray, keys: np.ndarray,
               rows: np.ndarray, ages: np.ndarray, drop_zero: bool) -> int:
    """Set each key's row and age (with ``drop_zero`` a zero row removes the key);
    returns the change in live keys."""
    bits = _bits(hkeys.size)
    d = rows.shape[1]
    change = 0
    for i in range(keys.size):
        zero = drop_zero
        for j in range(d if drop_zero else 0):
            if rows[i, j] != 0:
                zero = False
                break
        p = _position(hkeys, keys[i], bits)
        if zero:
            if p >= 0:
                s = hslot[p]
                pkeys[s] = -1
                free[nfree[0]] = s
                nfree[0] += 1
                _delete_at(hkeys, hslot, p, bits)
                change -= 1
            continue
        if p >= 0:
            s = hslot[p]
        else:
            nfree[0] -= 1
            s = free[nfree[0]]
            hkeys[-1 - p] = keys[i]
            hslot[-1 - p] = s
            pkeys[s] = keys[i]
            change += 1
        for j in range(d):
            prows[s, j] = rows[i, j]
        page[s] = ages[i]
    return change


@nb.njit(cache=True, nogil=True)
def keymap_take(hkeys: np.ndarray, hslot: np.ndarray, pkeys: np.ndarray, prows: np.ndarray,
                free: np.ndarray, nfree: np.ndarray, slots: np.ndarray,
                out: np.ndarray) -> None:
    """Copy the rows of pool ``slots`` (all live) into ``out`` and remove their keys."""
    bits = _bits(hkeys.size)
    for i in range(slots.size):
        s = slots[i]
        for j in range(prows.shape[1]):
            out[i, j] = prows[s, j]
        _delete_at(hkeys, hslot, _position(hkeys, pkeys[s], bits), bits)
        pkeys[s] = -1
        free[nfree[0]] = s
        nfree[0] += 1


@nb.njit(cache=True, nogil=True)
def keymap_rehash(hkeys: np.ndarray, hslot: np.ndarray, pkeys: np.ndarray) -> None:
    """Fill an empty table ``hkeys`` (all -1) with every live pool slot's key."""
    bits = _bits(hkeys.size)
    for s in range(pkeys.size):
        if pkeys[s] >= 0:
            p = -1 - _position(hkeys, pkeys[s], bits)
            hkeys[p] = pkeys[s]
            hslot[p] = s


def warm_up() -> None:
    """Compile (or load) this module's kernels and the varint coder's, on tiny inputs."""
    keys = np.array([2, 5], dtype=np.int64)
    buf = np.empty(20, dtype=np.uint8)
    varint_decode(buf[:varint_encode(keys, buf)], np.empty(2, dtype=np.int64))
    hkeys, hslot = np.full(8, -1, np.int64), np.zeros(8, np.int64)
    pkeys, page = np.full(4, -1, np.int64), np.zeros(4, np.int64)
    prows = np.zeros((4, 1), np.float32)
    free, nfree = np.arange(4, dtype=np.int64), np.array([4], np.int64)
    rows = np.ones((2, 1), np.float32)
    keymap_put(hkeys, hslot, pkeys, prows, page, free, nfree, keys, rows,
               np.zeros(2, np.int64), True)
    slots = keymap_find(hkeys, hslot, keys)
    keymap_add_into(prows, slots, rows)
    keymap_take(hkeys, hslot, pkeys, prows, free, nfree, slots, rows)
    keymap_rehash(np.full(8, -1, np.int64), hslot, pkeys)
