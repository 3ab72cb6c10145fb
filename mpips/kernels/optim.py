"""Server-side optimiser kernels: update only the rows a step touched, in place.

``error_model="numpy"`` drops Python's division checks so the row loops vectorise (3x
faster Adagrad here, same results). Learning rates come per column (``lr[j]``, float64),
so that a row's first-order weight and its embedding may learn at different rates.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, error_model="numpy")
def sgd_rows(rows: np.ndarray, offsets: np.ndarray, grads: np.ndarray, lr: np.ndarray,
             l2: float) -> None:
    """``w -= lr * (g + l2 * w)`` for each touched row."""
    d = rows.shape[1]
    for i in range(offsets.size):
        r = offsets[i]
        for j in range(d):
            w = rows[r, j]
            rows[r, j] = w - np.float32(lr[j] * (grads[i, j] + l2 * w))


@nb.njit(cache=True, nogil=True, error_model="numpy")
def adagrad_rows(rows: np.ndarray, accum: np.ndarray, offsets: np.ndarray,
                 grads: np.ndarray, lr: np.ndarray, l2: float, eps: float) -> None:
    """Adagrad per coordinate: ``a += g^2; w -= lr * g / (sqrt(a) + eps)``."""
    d = rows.shape[1]
    for i in range(offsets.size):
        r = offsets[i]
        for j in range(d):
            w = rows[r, j]
            g = grads[i, j] + l2 * w
            a = accum[r, j] + np.float32(g * g)
            accum[r, j] = a
            rows[r, j] = w - np.float32(lr[j] * g / (math.sqrt(a) + eps))


@nb.njit(cache=True, nogil=True, error_model="numpy")
def adam_rows(rows: np.ndarray, m: np.ndarray, v: np.ndarray, offsets: np.ndarray,
              grads: np.ndarray, lr: np.ndarray, l2: float, beta1: float, beta2: float,
              eps: float, step: int) -> None:
    """Adam on the touched rows only (lazy, as PyTorch's SparseAdam), bias-corrected for
    update ``step`` (1-based) of the table."""
    d = rows.shape[1]
    c1 = 1.0 - beta1 ** step
    c2 = 1.0 - beta2 ** step
    for i in range(offsets.size):
        r = offsets[i]
        for j in range(d):
            w = rows[r, j]
            g = grads[i, j] + l2 * w
            mj = np.float32(beta1 * m[r, j] + (1.0 - beta1) * g)
            vj = np.float32(beta2 * v[r, j] + (1.0 - beta2) * g * g)
            m[r, j] = mj
            v[r, j] = vj
            rows[r, j] = w - np.float32(lr[j] * (mj / c1) / (math.sqrt(vj / c2) + eps))


@nb.njit(cache=True, nogil=True, error_model="numpy")
def ftrl_rows(rows: np.ndarray, z: np.ndarray, n: np.ndarray, offsets: np.ndarray,
              grads: np.ndarray, alpha: np.ndarray, beta: float, l1: float, l2: float
              ) -> None:
    """FTRL-Proximal per coordinate (McMahan et al. 2013); the rows hold the weights that
    follow from the state, so pulls read them directly."""
    d = rows.shape[1]
    for i in range(offsets.size):
        r = offsets[i]
        for j in range(d):
            g = np.float64(grads[i, j])
            n_old = np.float64(n[r, j])
            n_new = n_old + g * g
            sigma = (math.sqrt(n_new) - math.sqrt(n_old)) / alpha[j]
            zj = np.float64(z[r, j]) + g - sigma * rows[r, j]
            z[r, j] = np.float32(zj)
            n[r, j] = np.float32(n_new)
            if abs(zj) <= l1:
                rows[r, j] = 0.0
            else:
                sign = 1.0 if zj > 0 else -1.0
                rows[r, j] = np.float32(-(zj - sign * l1) / ((beta + math.sqrt(n_new)) / alpha[j]
                                                             + l2))
