"""Numba pieces the compiled text parsers share: line bounds, exact number scanning, the
half-octave bucket, the id hash.

Each scanner accepts only a plain ASCII subset of what the Python reference parser
accepts (``int``, ``float``) and reports anything else, so that a format's kernel can hand
that line to the reference: a value the kernel computes is always the reference's value,
bit for bit, and every error message comes from the reference.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..kernels.init import _mix as mix  # noqa: F401  (Murmur3's finaliser, as ring.mix64)
from .hashing import COUNT_BASE, bucketize

NL, CR, TAB, SPACE = 10, 13, 9, 32
REFERENCE = -1        # a line a kernel leaves to the reference parser
# A scanned number: OK, or SLOW (valid syntax the exact fast path cannot convert: the
# caller converts the token with Python's float), or BAD (not in the subset scanned here).
OK, SLOW, BAD = 0, 1, 2
_POW10 = np.array([10.0 ** k for k in range(23)], dtype=np.float64)   # exact doubles
_TWO53 = 1 << 53
HEX_DIGIT = np.full(256, -1, dtype=np.int8)          # byte -> its hex digit, else -1
HEX_DIGIT[48:58] = np.arange(10)
HEX_DIGIT[97:103] = HEX_DIGIT[65:71] = np.arange(10, 16)
_NEAR = 1e-7          # 2*log2|v| this close to an integer is left to the reference


def line_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, newline left out) of each line of ``buf``, as the
    reference splits text: at every newline, a last line without one included."""
    if buf.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    nl = np.flatnonzero(buf == NL)
    starts = np.concatenate([[0], nl + 1]).astype(np.int64)
    ends = np.concatenate([nl, [buf.size]]).astype(np.int64)
    if buf.size and buf[-1] == NL:
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends


@nb.njit(cache=True, nogil=True)
def strip_cr(buf: np.ndarray, a: int, b: int) -> int:
    """The end of line [a, b) without its trailing carriage returns."""
    while b > a and buf[b - 1] == CR:
        b -= 1
    return b


@nb.njit(cache=True, nogil=True)
def plain_ascii(buf: np.ndarray, a: int, b: int) -> bool:
    """Only printable ASCII, TAB and space: bytes whose meaning is the same to the
    reference's ``str.split`` / ``int`` / ``float`` as here."""
    for i in range(a, b):
        c = buf[i]
        if (c < SPACE and c != TAB) or c > 126:
            return False
    return True


@nb.njit(cache=True, nogil=True)
def scan_uint(buf: np.ndarray, a: int, b: int, most: int) -> tuple[int, np.uint64]:
    """ASCII decimal digits [a, b), at most ``most`` (<= 19) of them -> (status, value)."""
    if b <= a or b - a > most:
        return BAD, np.uint64(0)
    v = np.uint64(0)
    for i in range(a, b):
        d = buf[i] - 48
        if d < 0 or d > 9:
            return BAD, np.uint64(0)
        v = v * np.uint64(10) + np.uint64(d)
    return OK, v


@nb.njit(cache=True, nogil=True)
def scan_float(buf: np.ndarray, a: int, b: int) -> tuple[int, float]:
    """``[+-]digits[.digits][(e|E)[+-]digits]`` -> (status, the correctly rounded double).

    Exact when the digits form an integer m <= 2**53 (at most 18 digits) and the decimal
    exponent e is within +-22: m * 10**e is then one IEEE operation on exact operands
    (Clinger's fast path). Other valid numbers are SLOW, left to Python's ``float``."""
    i, neg = a, False
    if i < b and (buf[i] == 43 or buf[i] == 45):
        neg = buf[i] == 45
        i += 1
    m, digits, seen, exp10 = 0, 0, 0, 0
    dot = False
    while i < b:
        c = buf[i]
        if 48 <= c <= 57:
            seen += 1
            if m or c != 48:
                digits += 1
                if digits <= 18:
                    m = m * 10 + (c - 48)
                else:
                    exp10 += 1
            if dot:
                exp10 -= 1
        elif c == 46 and not dot:
            dot = True
        else:
            break
        i += 1
    if seen == 0:
        return BAD, 0.0
    if i < b:
        if buf[i] != 101 and buf[i] != 69:
            return BAD, 0.0
        i += 1
        eneg = i < b and buf[i] == 45
        if i < b and (buf[i] == 43 or buf[i] == 45):
            i += 1
        if i >= b:
            return BAD, 0.0
        e, first = 0, i
        while i < b:
            d = buf[i] - 48
            if d < 0 or d > 9:
                return BAD, 0.0
            if i - first < 6:
                e = e * 10 + d
            i += 1
        if b - first > 6:
            return SLOW, 0.0
        exp10 += -e if eneg else e
    if m == 0:
        return OK, -0.0 if neg else 0.0
    if digits > 18 or m > _TWO53 or exp10 < -22 or exp10 > 22:
        return SLOW, 0.0
    v = float(m) * _POW10[exp10] if exp10 >= 0 else float(m) / _POW10[-exp10]
    return OK, -v if neg else v


@nb.njit(cache=True, nogil=True)
def half_octave(x: float, exact_power: bool) -> tuple[bool, int]:
    """floor(2 * log2(x)) for x > 0, and whether it is certain: unless x is a power of
    two, a value this close to an integer may round either way in another log2."""
    t = 2.0 * math.log2(x)
    k = math.floor(t)
    sure = exact_power or abs(t - round(t)) > _NEAR
    return sure, int(k)


def _odd_half_octaves() -> np.ndarray:
    """``T[k]`` for odd k: the least count whose ``bucketize`` is 2 + k (the count nearest
    2**(k/2) from above), read off NumPy itself, so that the kernel's integer test
    agrees with the reference's floating log2 wherever that rounds; even half-octaves
    start at powers of two, where every log2 is exact (checked here too)."""
    out = np.zeros(64, np.int64)
    for k in range(5, 62, 2):
        near = math.isqrt(1 << k)
        v = np.arange(max(near - 2, 4), near + 3)
        got = bucketize(v) - 2
        first = int(np.argmax(got >= k))
        assert (got[:first] == k - 1).all() and (got[first:] == k).all() and first > 0
        out[k] = v[first]
    powers = 2 ** np.arange(2, 31)
    assert (bucketize(powers) == 2 + 2 * np.arange(2, 31)).all()
    assert (bucketize(powers - 1)[1:] == 1 + 2 * np.arange(3, 31)).all()
    return out


ODD_HALF_OCTAVES = _odd_half_octaves()


@nb.njit(cache=True, nogil=True)
def count_raw(v: np.int64) -> tuple[bool, np.uint64]:
    """The raw value of a present count (``hashing.encode_counts``): counts <= 3 as they
    are, larger ones 2 + their half-octave; offset clear of MISSING. Below 2**31 the
    half-octave comes from the count's bits and ``ODD_HALF_OCTAVES``; above, from log2,
    with whether it is certain."""
    if v <= 3:
        return True, np.uint64(v) + COUNT_BASE
    if v < 2147483648:
        e = math.frexp(float(v))[1] - 1                 # v in [2**e, 2**(e + 1))
        k = 2 * e + (v >= ODD_HALF_OCTAVES[2 * e + 1])
        return True, np.uint64(2 + k) + COUNT_BASE
    sure, k = half_octave(float(v), (v & (v - 1)) == 0)
    return sure, np.uint64(2 + k) + COUNT_BASE
