"""Criteo TSV: ``label, I1..I13, C1..C26``, TAB separated, empty = missing.

Counts are bucketised by half-octaves and hex categories parsed as integers; both are then
hashed per field (column) into ids. ``CriteoFormat.line`` is the reference parser;
``CriteoFormat.compiled`` parses a block of bytes in one numba kernel into the same ids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import numba as nb

from .hashing import FIELD_NAMES, MISSING, FieldHashing, encode_counts, salts
from .parse import BadLine, Parsed
from .scan import HEX_DIGIT, TAB, count_raw, mix, strip_cr

NUMERIC, CATEGORICAL = 13, 26
COLUMNS = 1 + NUMERIC + CATEGORICAL
_MISSING = int(MISSING)

__all__ = ["CriteoFormat"]


@dataclass
class _Block:
    labels: np.ndarray
    counts: np.ndarray
    present: np.ndarray
    cats: np.ndarray


class CriteoFormat:
    """The Criteo TSV format (see the module's docstring)."""

    name = "criteo"
    fields = NUMERIC + CATEGORICAL
    names = FIELD_NAMES
    padded = False
    header = False

    def start(self, n: int) -> _Block:
        return _Block(np.empty(n, np.float32), np.zeros((n, NUMERIC), np.int64),
                      np.zeros((n, NUMERIC), bool), np.empty((n, CATEGORICAL), np.uint64))

    def line(self, block: _Block, i: int, text: str) -> None:
        cols = text.split("\t")
        if len(cols) != COLUMNS:
            raise BadLine(f"expected {COLUMNS} TAB-separated columns, found {len(cols)}")
        if cols[0] not in ("0", "1"):
            raise BadLine(f"label {cols[0]!r} is not 0 or 1")
        block.labels[i] = cols[0] == "1"
        try:
            nums = cols[1:1 + NUMERIC]
            block.counts[i] = [int(c) if c else 0 for c in nums]
            block.present[i] = [c != "" for c in nums]
            cats = [int(c, 16) if c else _MISSING for c in cols[1 + NUMERIC:]]
            given = [v for v, c in zip(cats, cols[1 + NUMERIC:]) if c]
            if given and (min(given) < 0 or max(given) >= _MISSING):   # no wrap into MISSING
                raise ValueError
            block.cats[i] = cats
        except (ValueError, OverflowError):
            column, what = _first_bad(cols)
            raise BadLine(f"column {column + 1} {cols[column]!r} is not {what}") from None

    def finish(self, block: _Block, seed: int) -> Parsed:
        raw = np.concatenate([encode_counts(block.counts, block.present), block.cats], axis=1)
        ids = FieldHashing(1, seed).ids(raw)
        present = np.concatenate([block.present, block.cats != MISSING], axis=1)
        return Parsed(ids, np.ones(ids.shape, np.float32), block.labels, present)

    def compiled(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, seed: int
                 ) -> tuple[Parsed, np.ndarray]:
        """Lines [starts, ends) of ``buf`` -> (their rows, which lines the kernel parsed;
        the others hold garbage and are for the reference parser)."""
        n = starts.size
        ids = np.empty((n, self.fields), np.uint64)
        labels = np.empty(n, np.float32)
        present = np.empty((n, self.fields), bool)
        ok = np.empty(n, bool)
        _criteo_rows(buf, starts, ends, salts(np.arange(self.fields), seed), ids, labels,
                     present, ok)
        return Parsed(ids, np.ones(ids.shape, np.float32), labels, present), ok


@nb.njit(cache=True, nogil=True)
def _criteo_line(buf, a, b, salt, ids, present, i) -> bool:
    """Columns 1..39 of one line into row ``i``, each byte scanned once. False for a bad
    line and for spellings outside the plain subset (a sign other than a count's ``-``,
    over 18 count or 16 hex digits, an uncertain bucket): those are the reference's."""
    at = a
    for f in range(NUMERIC):
        neg = at < b and buf[at] == 45
        j = at + neg
        v = np.int64(0)
        while j < b and buf[j] != TAB:
            d = HEX_DIGIT[buf[j]]
            if d < 0 or d > 9:
                return False
            v = v * 10 + d
            j += 1
        digits = j - at - neg
        if j == b or digits > 18 or (neg and digits == 0):
            return False
        present[i, f] = j > at
        raw = MISSING
        if j > at:
            sure, raw = count_raw(-v if neg else v)
            if not sure:
                return False
        ids[i, f] = mix(raw ^ salt[f])
        at = j + 1
    for f in range(NUMERIC, NUMERIC + CATEGORICAL):
        j = at
        raw = np.uint64(0)
        while j < b and buf[j] != TAB:
            d = HEX_DIGIT[buf[j]]
            if d < 0:
                return False
            raw = (raw << np.uint64(4)) | np.uint64(d)
            j += 1
        if (j == b) != (f == NUMERIC + CATEGORICAL - 1) or j - at > 16 or raw == MISSING:
            return False                         # too few or too many columns, too long
        present[i, f] = j > at
        ids[i, f] = mix((raw if j > at else MISSING) ^ salt[f])
        at = j + 1
    return True


@nb.njit(cache=True, nogil=True)
def _criteo_rows(buf, starts, ends, salt, ids, labels, present, ok) -> None:
    for i in range(starts.size):
        a, b = starts[i], strip_cr(buf, starts[i], ends[i])
        ok[i] = b - a >= 2 and buf[a + 1] == TAB and (buf[a] == 48 or buf[a] == 49) \
            and _criteo_line(buf, a + 2, b, salt, ids, present, i)
        if ok[i]:
            labels[i] = np.float32(buf[a] == 49)


def _first_bad(cols: list[str]) -> tuple[int, str]:
    """The first column that is not a 64-bit integer count or an unsigned hex category."""
    for j, text in enumerate(cols[1:], 1):
        if not text:
            continue
        numeric = j <= NUMERIC
        try:
            value = int(text, 10 if numeric else 16)
        except ValueError:
            value = None
        if numeric and (value is None or not -2**63 <= value < 2**63):
            return j, "a 64-bit integer count"
        if not numeric and (value is None or not 0 <= value < 2**64 - 1):
            return j, "a hex category"
    raise AssertionError("no bad column in a line that failed to parse")
