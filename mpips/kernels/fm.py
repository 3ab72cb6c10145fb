"""Factorization machines on sparse batches (Rendle 2010), with the O(k n) identity.

A feature's row is ``[w, v_1..v_k]``: its linear weight, then its embedding.
``z = b + sum_f w_f x_f + 1/2 sum_d ((sum_f v_fd x_f)^2 - sum_f (v_fd x_f)^2)``.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .lr import logloss_terms


@nb.njit(cache=True, nogil=True)
def fm_logits(rows: np.ndarray, bias: float, inverse: np.ndarray, vals: np.ndarray
              ) -> np.ndarray:
    """The FM logit of every sample (float64 accumulation)."""
    n, F = inverse.shape
    k = rows.shape[1] - 1
    z = np.empty(n, dtype=np.float64)
    s = np.empty(k, dtype=np.float64)
    for i in range(n):
        acc = np.float64(bias)
        s[:] = 0.0
        sq = 0.0
        for f in range(F):
            r = inverse[i, f]
            x = np.float64(vals[i, f])
            acc += rows[r, 0] * x
            for d in range(k):
                t = rows[r, 1 + d] * x
                s[d] += t
                sq += t * t
        for d in range(k):
            acc += 0.5 * s[d] * s[d]
        z[i] = acc - 0.5 * sq
    return z


@nb.njit(cache=True, nogil=True)
def fm_grad(rows: np.ndarray, bias: float, inverse: np.ndarray, vals: np.ndarray,
            labels: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """Gradient rows for the unique features, bias gradient and summed loss (x ``scale``).

    ``d z / d w = x``; ``d z / d v_d = x (s_d - v_d x)`` with ``s_d = sum_f v_fd x_f``.
    """
    n, F = inverse.shape
    k = rows.shape[1] - 1
    g, loss = logloss_terms(fm_logits(rows, bias, inverse, vals), labels)
    grows = np.zeros(rows.shape, dtype=np.float32)
    s = np.empty(k, dtype=np.float64)
    gb = 0.0
    for i in range(n):
        gi = g[i] * scale
        gb += gi
        s[:] = 0.0
        for f in range(F):
            r = inverse[i, f]
            for d in range(k):
                s[d] += rows[r, 1 + d] * np.float64(vals[i, f])
        for f in range(F):
            r = inverse[i, f]
            x = np.float64(vals[i, f])
            grows[r, 0] += np.float32(gi * x)
            for d in range(k):
                grows[r, 1 + d] += np.float32(gi * x * (s[d] - rows[r, 1 + d] * x))
    return grows, gb, loss
