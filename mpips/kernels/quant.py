"""int8 rows: per row a power-of-two scale ``2**e`` (int8), an integer offset ``z``
(int16) and a uint8 code per value, ``value = (q + z) * 2**e`` (``codecs``). The NumPy
reference is ``tests/reference.py:int8_encode``.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

E_MIN, E_MAX = -128, 112          # 2**112 * 2**15 still fits float32
Z_MIN, Z_MAX = -32768, 32767 - 255


@nb.njit(cache=True, nogil=True, inline="always")
def _exponent(x: float) -> int:
    """The least ``e`` with ``2**e >= x`` (``E_MIN`` for x == 0)."""
    if x <= 0:
        return E_MIN
    mant, ex = math.frexp(x)
    return ex - 1 if mant == 0.5 else ex


@nb.njit(cache=True, nogil=True)
def int8_encode(rows: np.ndarray, out: np.ndarray) -> None:
    """Code float32 ``rows`` (n, d) into ``out`` (n, 3 + d) uint8: the smallest
    power-of-two scale that spans a row in 254 steps and keeps ``|z|`` within 32,000,
    ``z = floor(lo / scale)`` and ``q = rint(v / scale - z)`` (ties to even). Everything
    but that one rounding is exact in float64."""
    n, d = rows.shape
    for i in range(n):
        lo = np.float64(rows[i, 0])
        hi = lo
        for j in range(1, d):
            v = np.float64(rows[i, j])
            lo = min(lo, v)
            hi = max(hi, v)
        e = max(_exponent((hi - lo) / 254.0), _exponent(max(abs(lo), abs(hi)) / 32000.0))
        e = min(max(e, E_MIN), E_MAX)
        z = min(max(math.floor(math.ldexp(lo, -e)), Z_MIN), Z_MAX)
        out[i, 0] = np.uint8(np.int8(e) & 0xFF)
        zu = np.uint16(np.int16(z) & 0xFFFF)
        out[i, 1] = np.uint8(zu & 0xFF)
        out[i, 2] = np.uint8(zu >> 8)
        for j in range(d):
            q = np.rint(math.ldexp(np.float64(rows[i, j]), -e) - z)
            out[i, 3 + j] = np.uint8(min(max(q, 0.0), 255.0))


@nb.njit(cache=True, nogil=True)
def int8_decode(coded: np.ndarray, out: np.ndarray) -> None:
    """``out[i, j] = (q + z) * 2**e`` from ``coded`` (n, 3 + d), exactly."""
    n, d = out.shape
    for i in range(n):
        e = np.int64(np.int8(coded[i, 0]))
        z = np.int64(np.int16(np.uint16(coded[i, 1]) | (np.uint16(coded[i, 2]) << 8)))
        for j in range(d):
            out[i, j] = np.float32(math.ldexp(np.float64(np.int64(coded[i, 3 + j]) + z), e))
