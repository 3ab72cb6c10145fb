"""Seeded initial values that depend only on (seed, table, key, column).

So a row starts the same whichever server holds it and however many servers there are.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def _mix(x: np.uint64) -> np.uint64:
    x = (x ^ (x >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
    x = (x ^ (x >> np.uint64(33))) * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


@nb.njit(cache=True, nogil=True)
def normal_rows(out: np.ndarray, keys: np.ndarray, col_from: int, std: float,
                salt: np.uint64) -> None:
    """``out[i, j] = std * N(0, 1)`` hashed from (salt, keys[i], j) for ``j >= col_from``;
    the columns before stay zero (e.g. FM's linear weight beside its embedding)."""
    d = out.shape[1]
    for i in range(keys.size):
        base = _mix(salt ^ (np.uint64(keys[i]) * np.uint64(0x9E3779B97F4A7C15)))
        for j in range(d):
            if j < col_from:
                out[i, j] = 0.0
                continue
            h1 = _mix(base + np.uint64(2 * j + 1))
            h2 = _mix(base + np.uint64(2 * j + 2))
            u1 = (np.float64(h1 >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)
            u2 = np.float64(h2 >> np.uint64(11)) * (1.0 / 9007199254740992.0)
            out[i, j] = np.float32(std * math.sqrt(-2.0 * math.log(u1))
                                   * math.cos(2.0 * math.pi * u2))
