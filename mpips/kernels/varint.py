"""Delta-coded keys: a strictly increasing run of offsets as LEB128 varints.

The first offset is written as it is, every later one as its gap to the previous minus
one (offsets are unique, so gaps are at least one): dense runs cost a byte a key.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def varint_encode(offsets: np.ndarray, out: np.ndarray) -> int:
    """Write ``offsets`` (int64, >= 0, strictly increasing) into ``out`` (uint8, at least
    10 bytes a key); returns the bytes written, or -1 if the offsets are not increasing."""
    n = 0
    prev = -1
    for i in range(offsets.size):
        k = offsets[i]
        if k <= prev:
            return -1
        d = np.uint64(k - prev - 1) if i > 0 else np.uint64(k)
        prev = k
        while d >= np.uint64(0x80):
            out[n] = np.uint8((d & np.uint64(0x7F)) | np.uint64(0x80))
            d >>= np.uint64(7)
            n += 1
        out[n] = np.uint8(d)
        n += 1
    return n


@nb.njit(cache=True, nogil=True)
def varint_decode(buf: np.ndarray, out: np.ndarray) -> int:
    """Read ``out.size`` offsets from ``buf``; returns the bytes read, or -1 if ``buf``
    ends early, a varint is longer than 64 bits or an offset passes 2**62."""
    pos = 0
    prev = -1
    limit = np.int64(1) << 62
    for i in range(out.size):
        d = np.uint64(0)
        shift = 0
        while True:
            if pos >= buf.size or shift > 63:
                return -1
            b = buf[pos]
            pos += 1
            d |= np.uint64(b & 0x7F) << np.uint64(shift)
            shift += 7
            if b < 0x80:
                break
        if d >= np.uint64(limit):
            return -1
        k = np.int64(d) if i == 0 else prev + 1 + np.int64(d)
        if k >= limit:
            return -1
        out[i] = k
        prev = k
    return pos
