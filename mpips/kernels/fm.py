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
def fm_backward(rows: np.ndarray, inverse: np.ndarray, vals: np.ndarray,
                g: np.ndarray) -> np.ndarray:
    """Gradient rows of the FM terms for the unique features, given ``g`` = d loss / d z
    per sample: ``d z / d w = x``; ``d z / d v_d = x (s_d - v_d x)``, ``s_d = sum_f v_fd x_f``.
    """
    n, F = inverse.shape
    k = rows.shape[1] - 1
    grows = np.zeros(rows.shape, dtype=np.float32)
    s = np.empty(k, dtype=np.float64)
    for i in range(n):
        gi = g[i]
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
    return grows


@nb.njit(cache=True, nogil=True)
def fm_grad(rows: np.ndarray, bias: float, inverse: np.ndarray, vals: np.ndarray,
            labels: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """Gradient rows for the unique features, bias gradient and summed loss (x ``scale``)."""
    g, loss = logloss_terms(fm_logits(rows, bias, inverse, vals), labels)
    g *= scale
    return fm_backward(rows, inverse, vals, g), g.sum(), loss


@nb.njit(cache=True, nogil=True)
def field_inputs(rows: np.ndarray, inverse: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """DeepFM's MLP input: per sample the fields' scaled embeddings ``v_f x_f``, side by
    side, shape (n, F * k)."""
    n, F = inverse.shape
    k = rows.shape[1] - 1
    h = np.empty((n, F * k), dtype=np.float64)
    for i in range(n):
        for f in range(F):
            r = inverse[i, f]
            x = np.float64(vals[i, f])
            for d in range(k):
                h[i, f * k + d] = rows[r, 1 + d] * x
    return h


@nb.njit(cache=True, nogil=True)
def add_field_grads(dh: np.ndarray, inverse: np.ndarray, vals: np.ndarray,
                    grows: np.ndarray) -> None:
    """Back-propagate d loss / d (MLP input) into the embedding rows, in sample order."""
    n, F = inverse.shape
    k = grows.shape[1] - 1
    for i in range(n):
        for f in range(F):
            r = inverse[i, f]
            x = np.float64(vals[i, f])
            for d in range(k):
                grows[r, 1 + d] += np.float32(dh[i, f * k + d] * x)
