"""Streaming reader for Criteo TSV: ``label, I1..I13, C1..C26``, TAB separated, empty = missing.

Counts are bucketised by half-octaves and hex categories parsed as integers; both are then
hashed per field into table keys. Only the requested row range is parsed, a batch at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from . import Batch
from .hashing import MISSING, FieldHashing, encode_counts

NUMERIC, CATEGORICAL = 13, 26
COLUMNS = 1 + NUMERIC + CATEGORICAL


def count_rows(path: Path) -> int:
    """Number of lines, counting a last line without a newline; no parsing."""
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def parse_lines(lines: list[str], path: Path, first_line: int) -> tuple[np.ndarray, np.ndarray]:
    """Text lines -> (raw uint64 values (n, 39), labels (n,)); errors name file:line."""
    raw = np.empty((len(lines), NUMERIC + CATEGORICAL), dtype=np.uint64)
    labels = np.empty(len(lines), dtype=np.float32)
    counts = np.zeros((len(lines), NUMERIC), dtype=np.int64)
    present = np.zeros((len(lines), NUMERIC), dtype=bool)
    for i, line in enumerate(lines):
        cols = line.rstrip("\r\n").split("\t")
        where = f"{path}:{first_line + i}"
        if len(cols) != COLUMNS:
            raise DataError(f"{where}: expected {COLUMNS} TAB-separated columns, found {len(cols)}")
        if cols[0] not in ("0", "1"):
            raise DataError(f"{where}: label {cols[0]!r} is not 0 or 1")
        labels[i] = cols[0] == "1"
        try:
            for f in range(NUMERIC):
                c = cols[1 + f]
                if c:
                    counts[i, f] = int(c)
                    present[i, f] = True
            for f in range(CATEGORICAL):
                c = cols[1 + NUMERIC + f]
                raw[i, NUMERIC + f] = int(c, 16) if c else MISSING
        except (ValueError, OverflowError):
            column, what = _first_bad(cols)
            raise DataError(f"{where}: column {column + 1} {cols[column]!r} is not "
                            f"{what}") from None
    raw[:, :NUMERIC] = encode_counts(counts, present)
    return raw, labels


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


class CriteoTSV:
    """Rows of one Criteo TSV file, hashed into table keys by ``hashing``."""

    fields = NUMERIC + CATEGORICAL

    def __init__(self, path: str | Path, hashing: FieldHashing) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file")
        self.hashing = hashing
        self._rows = count_rows(self.path)
        if self._rows == 0:
            raise DataError(f"{self.path}: the file is empty")
        with open(self.path, "r", encoding="utf-8", errors="replace", newline="") as fh:
            parse_lines([fh.readline()], self.path, 1)    # a wrong format fails here, early

    @property
    def rows(self) -> int:
        return self._rows

    def batches(self, start: int, stop: int, batch_size: int) -> Iterator[Batch]:
        """Parse rows [start, stop) a batch at a time; earlier lines are skipped unparsed."""
        with open(self.path, "r", encoding="utf-8", errors="replace", newline="") as fh:
            for _ in range(start):
                fh.readline()
            row = start
            while row < stop:
                n = min(batch_size, stop - row)
                lines = [fh.readline() for _ in range(n)]
                raw, labels = parse_lines(lines, self.path, row + 1)
                keys = self.hashing.keys(raw)
                yield Batch(keys, np.ones(keys.shape, dtype=np.float32), labels)
                row += n
