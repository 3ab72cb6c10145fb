"""Rows of one text file in any format (plain or ``.gz``), read a batch at a time.

A batch is found by its byte offset, from an index of where each batch of a row range
starts (one int per batch, built by counting newlines once), so batches can be read in
any order without parsing the lines before them; batches that lie within one shuffle
block are read together. A ``.gz`` file is decompressed as a stream that restarts from
its nearest kept decompressor state (``mpips.data.compressed``). Bad lines either stop the
job or, with ``on_bad="skip"``, are left out: their batch is then shorter, and a worker
still gets exactly the lines of its share, so the rows it trains on stay deterministic.
"""
from __future__ import annotations

from pathlib import Path
from typing import IO, Iterable, Iterator, Optional

import numpy as np

from ..errors import DataError
from . import Batch, n_batches, pick_runs, shuffle_block
from .compressed import codec, open_input
from .hashing import FieldHashing
from .lines import count_lines, line_offsets, read_lines
from .parse import Format, parse_block, parse_bytes


class TextSource:
    """Data rows of ``path`` in format ``fmt`` (a header line is not a row)."""

    def __init__(self, path: str | Path, fmt: Format, hashing: FieldHashing,
                 on_bad: str = "error") -> None:
        self.path = Path(path)
        check_file(self.path)
        if codec(self.path) == "zstd":
            raise DataError(f"{self.path}: training reads .gz or plain text; prepare .zst "
                            f"input with 'mpips prep' first (a zstd stream cannot be "
                            f"entered in the middle, and batches are read in any order)")
        self._fh: Optional[IO[bytes]] = None
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
        fh = self._stream()
        for run, first, last in pick_runs(picks, shuffle_block(batch_size)):
            fh.seek(int(offsets[first]))
            data = memoryview(fh.read(int(offsets[last + 1] - offsets[first])))
            for b in run:
                line = self._skip + start + b * batch_size
                piece = data[offsets[b] - offsets[first]:offsets[b + 1] - offsets[first]]
                parsed, bad = parse_bytes(self.format, piece, self.hashing.seed, self.path,
                                          line + 1, self.on_bad)
                if bad:
                    self._bad[line] = bad
                yield Batch(self.hashing.rows(parsed.ids), parsed.vals, parsed.labels)

    def _stream(self) -> IO[bytes]:
        """The file's (decompressed) bytes, kept open: a ``.gz`` stream keeps the states it
        can restart from."""
        if self._fh is None:
            self._fh = open_input(self.path)
        return self._fh

    def _batch_offsets(self, start: int, stop: int, batch_size: int) -> np.ndarray:
        """Byte offsets of the first line of each batch of [start, stop), then of ``stop``."""
        key = (start, stop, batch_size)
        if key not in self._offsets:
            firsts = np.minimum(start + batch_size * np.arange(
                n_batches(stop - start, batch_size) + 1), stop)
            self._offsets[key] = line_offsets(self._stream(), firsts + self._skip)
        return self._offsets[key]


def check_first_line(path: Path, fmt: Format) -> None:
    """Parse the first data line: a file in another format fails before any work."""
    skip = int(fmt.header)
    begin, end = line_offsets(path, np.array([skip, skip + 1]))
    with open_input(path) as fh:
        parse_block(fmt, read_lines(fh, int(begin), int(end)), 0, path, skip + 1)


def check_file(path: Path) -> None:
    """A missing, unreadable or empty input is a one-line error."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
