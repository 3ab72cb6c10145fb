"""Row coders of the push codecs (``codecs``): float32 rows to fp16, bf16 or int8 records,
each rounding to nearest, ties to even. With ``rest`` a coder also leaves in each row what
its rounding took off (the row minus its decoding, exact in float32), so that error
feedback (``residuals``) needs no second pass to decode, and returns how many rows kept
something. A coder codes the rows ``index`` names (row ``r`` of ``rows`` into row ``r`` of
``out``): all of a push's rows, or those of a table that a step updated, coded in place
into the table's coded mirror (``pullcodec``) without copies. The NumPy references are in
``tests/reference.py``.

int8 rows: per row a power-of-two scale ``2**e`` (int8), an integer offset ``z`` (int16)
and a uint8 code per value, ``value = (q + z) * 2**e``.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

E_MIN, E_MAX = -128, 112          # 2**112 * 2**15 still fits float32
Z_MIN, Z_MAX = -32768, 32767 - 255


@nb.njit(cache=True, nogil=True, inline="always")
def _exponent(x: float) -> int:
    """The least ``e`` with ``2**e >= x`` (``E_MIN`` for x == 0), from the float64's bits
    (``frexp`` where they are not a normal number's)."""
    if x <= 0:
        return E_MIN
    b = np.float64(x).view(np.int64)
    field = (b >> 52) & 0x7FF
    if field == 0 or field == 0x7FF:
        mant, ex = math.frexp(x)
        return ex - 1 if mant == 0.5 else ex
    return field - 1023 + ((b & 0xFFFFFFFFFFFFF) != 0)


@nb.njit(cache=True, nogil=True, inline="always")
def _pow2(e: int) -> float:
    """``2.0**e`` for ``|e| < 1023`` (a normal float64), from its bits."""
    return np.int64((e + 1023) << 52).view(np.float64)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def int8_code(rows: np.ndarray, out: np.ndarray, rest: bool, index: np.ndarray) -> int:
    """Code float32 ``rows[index]`` (of d values) into ``out[index]`` (3 + d uint8): the
    smallest power-of-two scale that spans a row in 254 steps and keeps ``|z|`` within
    32,000, ``z = floor(lo / scale)`` and ``q = rint(v / scale - z)`` (ties to even).
    Everything but that one rounding is exact in float64 (scales are powers of two)."""
    d = rows.shape[1]
    kept = 0
    for i in index:
        lo = np.float64(rows[i, 0])
        hi = lo
        for j in range(1, d):
            v = np.float64(rows[i, j])
            lo = min(lo, v)
            hi = max(hi, v)
        e = max(_exponent((hi - lo) / 254.0), _exponent(max(abs(lo), abs(hi)) / 32000.0))
        e = min(max(e, E_MIN), E_MAX)
        inv, scale = _pow2(-e), _pow2(e)
        z = min(max(math.floor(lo * inv), Z_MIN), Z_MAX)
        out[i, 0] = np.uint8(np.int8(e) & 0xFF)
        zu = np.uint16(np.int16(z) & 0xFFFF)
        out[i, 1] = np.uint8(zu & 0xFF)
        out[i, 2] = np.uint8(zu >> 8)
        nonzero = False
        for j in range(d):
            q = min(max(np.rint(np.float64(rows[i, j]) * inv - z), 0.0), 255.0)
            out[i, 3 + j] = np.uint8(q)
            if rest:
                r = rows[i, j] - np.float32((q + z) * scale)
                rows[i, j] = r
                nonzero |= r != 0
        kept += nonzero
    return kept


@nb.njit(cache=True, nogil=True)
def int8_decode(coded: np.ndarray, out: np.ndarray) -> None:
    """``out[i, j] = (q + z) * 2**e`` from ``coded`` (n, 3 + d), exactly."""
    n, d = out.shape
    for i in range(n):
        e = np.int64(np.int8(coded[i, 0]))
        z = np.float64(np.int16(np.uint16(coded[i, 1]) | (np.uint16(coded[i, 2]) << 8)))
        scale = _pow2(e)
        for j in range(d):
            out[i, j] = np.float32((np.float64(coded[i, 3 + j]) + z) * scale)


@nb.njit(cache=True, nogil=True)
def half_decode(coded: np.ndarray, out: np.ndarray) -> None:
    """IEEE halves ``coded`` (uint16) to float32 ``out``, exactly as NumPy converts them
    (NaN payloads kept), by their bits and without branches (NumPy's cast took 2.7 ns a
    value here, this 1.0)."""
    n, d = out.shape
    bits = out.view(np.uint32)
    for i in range(n):
        for j in range(d):
            h = np.int64(coded[i, j])
            sign = (h & 0x8000) << 16
            e, m = (h >> 10) & 0x1F, h & 0x3FF
            tiny = np.int64(np.float32(np.float32(m) * np.float32(2.0 ** -24)).view(np.uint32))
            big = (e + 112) << 23 if e < 31 else np.int64(0x7F800000)
            bits[i, j] = np.uint32(sign | (tiny if e == 0 else big | (m << 13)))


@nb.njit(cache=True, nogil=True, inline="always")
def _half(x: np.float32, b: np.int64) -> tuple[np.int64, np.int64]:
    """IEEE half of ``x`` (float32 bits ``b``; clipped to ±65504, NaN stays NaN as NumPy
    codes it) and its value's float32 bits. Every case is computed and one selected, no
    branches, so that the loop over a row vectorizes."""
    sign = b & 0x80000000
    a = b & 0x7FFFFFFF
    nan = a > 0x7F800000
    c = a if nan else min(a, np.int64(0x477FE000))                     # clip to ±65504
    normal = (c + 0x0FFF + ((c >> 13) & 1)) & ~np.int64(0x1FFF)    # round the bits
    tiny = np.rint(np.uint32(min(c, np.int64(0x38800000))).view(np.float32)
                   * np.float32(16777216.0))             # a subnormal half: 2**-24 units
    tiny_bits = np.int64(np.float32(tiny * np.float32(2.0 ** -24)).view(np.uint32))
    h = (0x7C00 | max((a & 0x007FFFFF) >> 13, 1)) if nan else \
        (normal - 0x38000000) >> 13 if c >= 0x38800000 else np.int64(tiny)
    back = b if nan else sign | (normal if c >= 0x38800000 else tiny_bits)
    return (sign >> 16) | h, back


@nb.njit(cache=True, nogil=True, inline="always")
def _brain(x: np.float32, b: np.int64) -> tuple[np.int64, np.int64]:
    """bfloat16 of ``x`` (float32 bits ``b``): its top 16 bits rounded to nearest even
    (NaN: 0x7FC0), and its value's float32 bits."""
    top = 0x7FC0 if x != x else ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF
    return top, top << 16


@nb.njit(cache=True, nogil=True, error_model="numpy")
def half_code(rows: np.ndarray, out: np.ndarray, rest: bool, brain: bool,
              index: np.ndarray) -> int:
    """Code float32 ``rows[index]`` (of d values) into 16-bit ``out[index]`` (d uint16):
    IEEE halves (clipped to ±65504), or with ``brain`` bfloat16; both round to nearest
    even."""
    d = rows.shape[1]
    bits = rows.view(np.uint32)
    kept = 0
    for i in index:
        nonzero = False
        for j in range(d):
            x = rows[i, j]
            h, bb = _brain(x, np.int64(bits[i, j])) if brain else \
                _half(x, np.int64(bits[i, j]))
            out[i, j] = np.uint16(h)
            if rest:
                r = x - np.uint32(bb).view(np.float32)
                rows[i, j] = r
                nonzero |= r != 0
        kept += nonzero
    return kept
