"""BLAKE2b with an 8-byte digest in numba (RFC 7693): the 64-bit value of a CSV category,
as ``hashlib.blake2b(text, digest_size=8)`` gives it (``csvdata.category_id``), computed
inside the compiled CSV parser."""
from __future__ import annotations

import numba as nb
import numpy as np

_IV = np.array([0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B,
                0xA54FF53A5F1D36F1, 0x510E527FADE682D1, 0x9B05688C2B3E6C1F,
                0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179], dtype=np.uint64)
_SIGMA = np.array([
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0]], dtype=np.int64)
_LANES = np.array([[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15],
                   [0, 5, 10, 15], [1, 6, 11, 12], [2, 7, 8, 13], [3, 4, 9, 14]],
                  dtype=np.int64)
_PARAM = np.uint64(0x01010008)        # digest length 8, no key, fanout 1, depth 1


@nb.njit(cache=True, nogil=True)
def _rotr(x: np.uint64, n: int) -> np.uint64:
    return (x >> np.uint64(n)) | (x << np.uint64(64 - n))


@nb.njit(cache=True, nogil=True)
def _compress(h, m, v, counted, last) -> None:
    for i in range(8):
        v[i], v[i + 8] = h[i], _IV[i]
    v[12] ^= np.uint64(counted)
    if last:
        v[14] = ~v[14]
    for r in range(12):
        s = _SIGMA[r % 10]
        for g in range(8):
            a, b, c, d = _LANES[g, 0], _LANES[g, 1], _LANES[g, 2], _LANES[g, 3]
            v[a] = v[a] + v[b] + m[s[2 * g]]
            v[d] = _rotr(v[d] ^ v[a], 32)
            v[c] = v[c] + v[d]
            v[b] = _rotr(v[b] ^ v[c], 24)
            v[a] = v[a] + v[b] + m[s[2 * g + 1]]
            v[d] = _rotr(v[d] ^ v[a], 16)
            v[c] = v[c] + v[d]
            v[b] = _rotr(v[b] ^ v[c], 63)
    for i in range(8):
        h[i] ^= v[i] ^ v[i + 8]


@nb.njit(cache=True, nogil=True)
def blake2b64(buf: np.ndarray, a: int, b: int, work: np.ndarray) -> np.uint64:
    """The BLAKE2b-64 digest of bytes [a, b) of ``buf`` as a little-endian integer;
    ``work`` is room for 40 uint64 (state, message block, working vector)."""
    h, m, v = work[:8], work[8:24], work[24:40]
    h[:] = _IV
    h[0] ^= _PARAM
    n = b - a
    at = a
    while True:
        take = min(128, b - at)
        m[:] = 0
        for k in range(take):
            m[k >> 3] |= np.uint64(buf[at + k]) << np.uint64(8 * (k & 7))
        at += take
        last = at >= b
        _compress(h, m, v, n if last else at - a, last)
        if last:
            return h[0]
