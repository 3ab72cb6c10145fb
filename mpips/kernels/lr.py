"""Logistic regression on sparse batches: forward, loss and gradient in one pass."""
from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def lr_logits(w: np.ndarray, bias: float, inverse: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """``z[i] = bias + sum_f w[inverse[i, f]] * vals[i, f]`` (float64 accumulation)."""
    n, F = inverse.shape
    z = np.empty(n, dtype=np.float64)
    for i in range(n):
        acc = np.float64(bias)
        for f in range(F):
            acc += np.float64(w[inverse[i, f], 0]) * vals[i, f]
        z[i] = acc
    return z


@nb.njit(cache=True, nogil=True)
def logloss_terms(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """d loss / d z for each sample, and the summed log-loss, both numerically stable."""
    n = z.size
    g = np.empty(n, dtype=np.float64)
    loss = 0.0
    for i in range(n):
        zi = z[i]
        if zi >= 0:
            e = math.exp(-zi)
            p = 1.0 / (1.0 + e)
            loss += math.log1p(e) + (1.0 - labels[i]) * zi
        else:
            e = math.exp(zi)
            p = e / (1.0 + e)
            loss += math.log1p(e) - labels[i] * zi
        g[i] = p - labels[i]
    return g, loss


@nb.njit(cache=True, nogil=True)
def lr_grad(w: np.ndarray, bias: float, inverse: np.ndarray, vals: np.ndarray,
            labels: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """Gradient rows for the unique keys, bias gradient and summed loss, all times ``scale``.

    ``w`` holds the pulled rows of the unique keys (shape ``(U, 1)``); ``inverse`` maps each
    (sample, field) to its row. Sums run in sample order, so results are deterministic.
    """
    n, F = inverse.shape
    g, loss = logloss_terms(lr_logits(w, bias, inverse, vals), labels)
    gw = np.zeros((w.shape[0], 1), dtype=np.float32)
    gb = 0.0
    for i in range(n):
        gi = g[i] * scale
        gb += gi
        for f in range(F):
            gw[inverse[i, f], 0] += np.float32(gi * vals[i, f])
    return gw, gb, loss
