"""Rows of one text file in any format, read a batch at a time (the slow path).

A batch is found by its byte offset, from an index of where each batch of a row range
starts (one int per batch, built by counting newlines once), so batches can be read in
any order without parsing the lines before them. Bad lines either stop the job or, with
``on_bad="skip"``, are left out: their batch is then shorter, and a worker still gets
exactly the lines of its share, so the rows it trains on stay deterministic.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from ..errors import DataError
from . import Batch, n_batches
from .hashing import FieldHashing
from .lines import count_lines, line_offsets, read_lines
from .parse import Format, parse_block


class TextSource:
    """Data rows of ``path`` in format ``fmt`` (a header line is not a row)."""

    def __init__(self, path: str | Path, fmt: Format, hashing: FieldHashing,
                 on_bad: str = "error") -> None:
        self.path = Path(path)
        check_file(self.path)
        self.format, self.hashing, self.on_bad = fmt, hashing, on_bad
        self.fields = fmt.fields
        self._skip = int(fmt.header)
        self._rows = count_lines(self.path) - self._skip
        self._offsets: dict[tuple[int, int, int], np.ndarray] = {}
        self._bad: dict[int, int] = {}       # first line of a block -> its bad lines
        if on_bad == "error" and self._rows > 0:   # a wrong format fails here, early
            check_first_line(self.path, fmt)

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def bad_lines(self) -> int:
        """Bad lines skipped so far, each counted once however often it was read."""
        return sum(self._bad.values())

    def batches(self, start: int, stop: int, batch_size: int,
                order: Optional[Iterable[int]] = None) -> Iterator[Batch]:
        """Batches ``order`` (default: all, in turn) of rows [start, stop)."""
        offsets = self._batch_offsets(start, stop, batch_size)
        picks = range(offsets.size - 1) if order is None else order
        with open(self.path, "rb") as fh:
            for b in picks:
                first = self._skip + start + b * batch_size
                lines = read_lines(fh, int(offsets[b]), int(offsets[b + 1]))
                parsed, bad = parse_block(self.format, lines, self.hashing.seed, self.path,
                                          first + 1, self.on_bad)
                if bad:
                    self._bad[first] = bad
                yield Batch(self.hashing.rows(parsed.ids), parsed.vals, parsed.labels)

    def _batch_offsets(self, start: int, stop: int, batch_size: int) -> np.ndarray:
        """Byte offsets of the first line of each batch of [start, stop), then of ``stop``."""
        key = (start, stop, batch_size)
        if key not in self._offsets:
            firsts = np.minimum(start + batch_size * np.arange(
                n_batches(stop - start, batch_size) + 1), stop)
            self._offsets[key] = line_offsets(self.path, firsts + self._skip)
        return self._offsets[key]


def check_first_line(path: Path, fmt: Format) -> None:
    """Parse the first data line: a file in another format fails before any work."""
    skip = int(fmt.header)
    begin, end = line_offsets(path, np.array([skip, skip + 1]))
    with open(path, "rb") as fh:
        parse_block(fmt, read_lines(fh, int(begin), int(end)), 0, path, skip + 1)


def check_file(path: Path) -> None:
    """A missing, unreadable or empty input is a one-line error."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
