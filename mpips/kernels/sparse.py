"""Sparse-key kernels: deduplication, segment sums and row gathers."""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique keys in order of first appearance, and each key's index into them.

    An open-addressing hash table, O(n); the order makes every later sum deterministic.
    """
    n = keys.size
    bits = 4
    while (1 << bits) < 2 * n:
        bits += 1
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)          # Fibonacci hashing: the top bits are the mixed ones
    slots = np.full(1 << bits, -1, dtype=np.int64)
    uniq = np.empty(n, dtype=np.int64)
    inverse = np.empty(n, dtype=np.int64)
    m = 0
    for i in range(n):
        k = keys[i]
        j = np.int64((np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)) >> shift)
        while True:
            s = slots[j]
            if s == -1:
                slots[j] = m
                uniq[m] = k
                inverse[i] = m
                m += 1
                break
            if uniq[s] == k:
                inverse[i] = s
                break
            j = (j + 1) & mask
    return uniq[:m].copy(), inverse


@nb.njit(cache=True, nogil=True)
def segment_sum(inverse: np.ndarray, rows: np.ndarray, n_segments: int) -> np.ndarray:
    """``out[inverse[i]] += rows[i]`` in index order (a fixed, deterministic order)."""
    d = rows.shape[1]
    out = np.zeros((n_segments, d), dtype=rows.dtype)
    for i in range(inverse.size):
        s = inverse[i]
        for j in range(d):
            out[s, j] += rows[i, j]
    return out


@nb.njit(cache=True, nogil=True)
def accumulate_rows(slot: np.ndarray, offsets: np.ndarray, rows: np.ndarray,
                    touched: np.ndarray, acc: np.ndarray, n: int) -> int:
    """Sum ``rows`` into ``acc`` by shard offset, in call order; returns the new count.

    ``slot[offset]`` is 0 for a row not yet touched this step, else 1 + its index into
    ``touched``/``acc`` (zero means untouched, so a fresh ``np.zeros`` array costs no
    memory until used); calls for several pushes in worker order give a fixed summation
    order. ``release_slots`` resets ``slot`` afterwards.
    """
    d = rows.shape[1]
    for i in range(offsets.size):
        r = offsets[i]
        s = slot[r] - 1
        if s < 0:
            s = n
            slot[r] = n + 1
            touched[n] = r
            n += 1
            for j in range(d):
                acc[s, j] = rows[i, j]
        else:
            for j in range(d):
                acc[s, j] += rows[i, j]
    return n


@nb.njit(cache=True, nogil=True)
def release_slots(slot: np.ndarray, touched: np.ndarray) -> None:
    """Mark the ``touched`` rows untouched again (``slot`` back to 0)."""
    for i in range(touched.size):
        slot[touched[i]] = 0


@nb.njit(cache=True, nogil=True)
def gather_rows(table: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = table[index[i]]``: the one-process pull, and the direct read of a shard."""
    d = table.shape[1]
    for i in range(index.size):
        r = index[i]
        for j in range(d):
            out[i, j] = table[r, j]


@nb.njit(cache=True, nogil=True)
def gather_scatter_rows(table: np.ndarray, index: np.ndarray, positions: np.ndarray,
                        out: np.ndarray) -> None:
    """``out[positions[i]] = table[index[i]]``: a direct pull from one server's shard."""
    d = table.shape[1]
    for i in range(index.size):
        r = index[i]
        p = positions[i]
        for j in range(d):
            out[p, j] = table[r, j]


@nb.njit(cache=True, nogil=True)
def scatter_rows(src: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """``out[index[i]] = src[i]``: puts rows fetched per server back in request order."""
    d = src.shape[1]
    for i in range(index.size):
        r = index[i]
        for j in range(d):
            out[r, j] = src[i, j]


@nb.njit(cache=True, nogil=True)
def add_partition_counts(counts: np.ndarray, keys: np.ndarray, salt: int, partitions: int,
                         weight: float) -> None:
    """``counts[(k + salt) % partitions] += weight`` for every key ``k >= 0``: the load
    each partition of a table brings, without a temporary array the size of ``counts``
    (a mask instead of the modulo when ``partitions`` is a power of two)."""
    if partitions & (partitions - 1) == 0:
        mask = partitions - 1
        for i in range(keys.size):
            counts[(keys[i] + salt) & mask] += weight
    else:
        for i in range(keys.size):
            counts[(keys[i] + salt) % partitions] += weight
