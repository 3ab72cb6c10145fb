"""libSVM / libFM (``label idx:val ...``) and libFFM (``label field:idx:val ...``).

Rows have no fixed fields, so a row's features fill ``width`` slots (the most features of
any line, found by counting ``:``) and unused slots are padded with ``PAD_ID`` and value 0,
which adds nothing to a logit or a gradient. A feature's id depends on its index (and its
libFFM field), never on its slot; values are kept as they are. Fields in messages count
from 1, the label being field 1.

``LibSVMFormat.line`` is the reference parser; ``LibSVMFormat.compiled`` parses a block of
bytes in numba kernels into the same ids and values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from .hashing import GOLDEN, PAD_ID, hash_ids, salts
from .parse import BadLine, Parsed, parse_label
from .scan import (OK, REFERENCE, SLOW, SPACE, TAB, mix, plain_ascii, scan_float, scan_uint,
                   strip_cr)


@dataclass
class _Block:
    labels: np.ndarray
    fields: np.ndarray     # uint64 libFFM field of each slot (0 for libSVM)
    index: np.ndarray      # uint64 feature index of each slot
    vals: np.ndarray
    used: np.ndarray       # slots in use per line


class LibSVMFormat:
    """``label idx:val ...`` with ``width`` slots; libFFM (``ffm``) adds a field."""

    padded = True
    header = False
    names: tuple[str, ...] = ()

    def __init__(self, width: int, ffm: bool = False) -> None:
        self.fields, self.ffm = max(width, 1), ffm
        self.name = "libffm" if ffm else "libsvm"
        self._parts = 3 if ffm else 2
        self._shape = "field:idx:val" if ffm else "idx:val"

    def start(self, n: int) -> _Block:
        w = self.fields
        return _Block(np.empty(n, np.float32), np.zeros((n, w), np.uint64),
                      np.zeros((n, w), np.uint64), np.zeros((n, w), np.float32),
                      np.zeros(n, np.int64))

    def line(self, block: _Block, i: int, text: str) -> None:
        tokens = text.split()
        if not tokens:
            raise BadLine("empty line")
        block.labels[i] = parse_label(tokens[0])
        for slot, token in enumerate(tokens[1:]):
            parts = token.split(":")
            try:
                if len(parts) != self._parts:
                    raise ValueError
                numbers = [int(p) for p in parts[:-1]]
                value = float(parts[-1])
                if min(numbers) < 0 or max(numbers) >= 2**64 or not math.isfinite(value):
                    raise ValueError
            except ValueError:
                raise BadLine(f"field {slot + 2} {token!r} is not {self._shape}") from None
            if slot >= self.fields:
                raise BadLine(f"{len(tokens) - 1} features, more than the {self.fields} "
                              f"slots counted when the file was opened")
            block.index[i, slot] = numbers[-1]
            block.fields[i, slot] = numbers[0] if self.ffm else 0
            block.vals[i, slot] = value
        block.used[i] = len(tokens) - 1

    def finish(self, block: _Block, seed: int) -> Parsed:
        used = np.arange(self.fields) < block.used[:, None]
        ids = np.where(used, hash_ids(block.index, salts(block.fields, seed)), PAD_ID)
        return Parsed(ids, block.vals, block.labels, used)

    def compiled(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, seed: int
                 ) -> tuple[Parsed, np.ndarray]:
        """Lines [starts, ends) of ``buf`` -> (their rows, which lines were parsed). Values
        the exact fast path cannot convert are converted by Python's ``float`` here."""
        n, w = starts.size, self.fields
        ids = np.full((n, w), PAD_ID, np.uint64)
        vals = np.zeros((n, w), np.float32)
        labels = np.empty(n, np.float32)
        used = np.zeros((n, w), bool)
        slow = np.empty(n, np.int64)
        _libsvm_rows(buf, starts, ends, w, self._parts, np.uint64(seed), ids, vals, labels,
                     used, slow)
        rows = np.flatnonzero(slow > 0)
        if rows.size:
            where = np.empty((int(slow[rows].sum()), 4), np.int64)
            _slow_values(buf, starts, ends, rows, self._parts, where)
            for row, slot, a, b in where:
                value = float(buf[a:b].tobytes())
                if math.isfinite(value):
                    vals[row, slot] = value
                else:
                    slow[row] = REFERENCE
        return Parsed(ids, vals, labels, used), slow >= 0


@nb.njit(cache=True, nogil=True)
def _token(buf: np.ndarray, at: int, b: int) -> tuple[int, int]:
    """The next space- or TAB-separated token of [at, b): its (start, end)."""
    while at < b and (buf[at] == SPACE or buf[at] == TAB):
        at += 1
    end = at
    while end < b and buf[end] != SPACE and buf[end] != TAB:
        end += 1
    return at, end


@nb.njit(cache=True, nogil=True)
def _feature(buf, a, b, parts):
    """``[field:]idx:val`` in [a, b) -> (status, field, index, value, where val starts)."""
    numbers = np.zeros(2, np.uint64)
    at = a
    for k in range(parts - 1):
        colon = at
        while colon < b and buf[colon] != 58:
            colon += 1
        status, number = scan_uint(buf, at, colon, 19)
        numbers[k] = number
        if status != OK or colon == b:
            return REFERENCE, numbers[0], numbers[0], 0.0, at
        at = colon + 1
    status, value = scan_float(buf, at, b)
    field = numbers[0] if parts == 3 else np.uint64(0)
    return status, field, numbers[parts - 2], value, at


@nb.njit(cache=True, nogil=True)
def _libsvm_line(buf, a, b, width, parts, seed, ids, vals, used, i) -> int:
    """Features of one line (after its label) into row ``i``: how many values are SLOW,
    or REFERENCE."""
    slot, slow = 0, 0
    ta, tb = _token(buf, a, b)
    while ta < b:
        status, field, index, value, _ = _feature(buf, ta, tb, parts)
        if status != OK and status != SLOW or slot >= width:
            return REFERENCE
        slow += status == SLOW
        salt = mix(field * GOLDEN + seed)
        ids[i, slot] = mix(index ^ salt)
        vals[i, slot] = np.float32(value)
        used[i, slot] = True
        slot += 1
        ta, tb = _token(buf, tb, b)
    return slow


@nb.njit(cache=True, nogil=True)
def _libsvm_rows(buf, starts, ends, width, parts, seed, ids, vals, labels, used, slow):
    for i in range(starts.size):
        a, b = starts[i], strip_cr(buf, starts[i], ends[i])
        slow[i] = REFERENCE
        if not plain_ascii(buf, a, b):
            continue
        la, lb = _token(buf, a, b)
        status, label = scan_float(buf, la, lb)
        if la == b or status != OK or not (label == 1.0 or label == 0.0 or label == -1.0):
            continue
        labels[i] = np.float32(label == 1.0)
        slow[i] = _libsvm_line(buf, lb, b, width, parts, seed, ids, vals, used, i)


@nb.njit(cache=True, nogil=True)
def _slow_values(buf, starts, ends, rows, parts, where) -> None:
    """(row, slot, start, end) of each SLOW value of lines ``rows``, in ``where``."""
    k = 0
    for i in rows:
        b = strip_cr(buf, starts[i], ends[i])
        _, ta = _token(buf, starts[i], b)            # past the label
        ta, tb = _token(buf, ta, b)
        slot = 0
        while ta < b:
            status, _, _, _, at = _feature(buf, ta, tb, parts)
            if status == SLOW:
                where[k, 0], where[k, 1], where[k, 2], where[k, 3] = i, slot, at, tb
                k += 1
            slot += 1
            ta, tb = _token(buf, tb, b)
