"""Criteo TSV: ``label, I1..I13, C1..C26``, TAB separated, empty = missing.

Counts are bucketised by half-octaves and hex categories parsed as integers; both are then
hashed per field (column) into ids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hashing import FIELD_NAMES, MISSING, FieldHashing, encode_counts
from .parse import BadLine, Parsed

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
