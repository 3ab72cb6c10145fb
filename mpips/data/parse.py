"""Parsing blocks of text lines in any format, with one policy for bad lines: an error
naming the file and line (``--on-bad-line error``), or skipped and counted (``skip``).

``parse_block`` is the reference: Python, a line at a time. ``parse_bytes`` is what the
readers use: the format's numba kernel parses a block of bytes, and the few lines it does
not take (bad lines, and rare valid spellings outside its plain subset) go through the
reference one by one, so rows, error messages and skip counts are the reference's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import DataError
from .scan import line_bounds

BAD_LINE_MODES = ("error", "skip")


class BadLine(ValueError):
    """What is wrong with one line; the caller adds the file and line number."""


@dataclass
class Parsed:
    """Rows of a block: 64-bit ids and values (n, fields), 0/1 labels, and which fields
    were present (for the manifest's statistics)."""

    ids: np.ndarray        # uint64
    vals: np.ndarray       # float32
    labels: np.ndarray     # float32
    present: np.ndarray    # bool

    def __len__(self) -> int:
        return int(self.labels.size)

    def take(self, rows: np.ndarray) -> "Parsed":
        return Parsed(self.ids[rows], self.vals[rows], self.labels[rows], self.present[rows])


class Format(Protocol):
    """A text format: how many fields a row has, their names (empty: positional slots
    without names), whether unused slots are padded, and how lines become rows."""

    name: str
    fields: int
    names: tuple[str, ...]
    padded: bool
    header: bool                 # the first line of each file is a header

    def start(self, n: int) -> Any:
        """Room for ``n`` lines."""

    def line(self, block: Any, i: int, text: str) -> None:
        """Parse line ``i`` (no newline, maybe a CR) into ``block``; raise ``BadLine``."""

    def finish(self, block: Any, seed: int) -> Parsed:
        """The block's rows, hashed with ``seed``."""

    def compiled(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, seed: int
                 ) -> tuple[Parsed, np.ndarray]:
        """Lines [starts, ends) of ``buf`` (uint8) -> (rows, which lines were parsed)."""


def parse_block(fmt: Format, lines: list[str], seed: int, path: object, first_line: int,
                on_bad: str = "error") -> tuple[Parsed, int]:
    """Lines numbered from ``first_line`` -> (their good rows, number of bad lines)."""
    block = fmt.start(len(lines))
    good = np.ones(len(lines), dtype=bool)
    for i, text in enumerate(lines):
        try:
            fmt.line(block, i, text.rstrip("\r"))
        except BadLine as exc:
            if on_bad != "skip":
                raise DataError(f"{path}:{first_line + i}: {exc}") from None
            good[i] = False
    parsed = fmt.finish(block, seed)
    bad = len(lines) - int(good.sum())
    return (parsed.take(good) if bad else parsed), bad


def parse_bytes(fmt: Format, data: bytes | memoryview, seed: int, path: object,
                first_line: int, on_bad: str = "error") -> tuple[Parsed, int]:
    """The lines of ``data`` (as ``parse_block`` splits them) numbered from
    ``first_line`` -> (their good rows, number of bad lines)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, ends = line_bounds(buf)
    parsed, ok = fmt.compiled(buf, starts, ends, seed)
    good = np.ones(starts.size, dtype=bool)
    for i in np.flatnonzero(~ok):
        row, bad = parse_reference(fmt, buf[starts[i]:ends[i]], seed, path,
                                   first_line + int(i), on_bad)
        if bad:
            good[i] = False
        else:
            for name in ("ids", "vals", "labels", "present"):
                getattr(parsed, name)[i] = getattr(row, name)[0]
    return (parsed if good.all() else parsed.take(good)), starts.size - int(good.sum())


def parse_reference(fmt: Format, data: bytes | memoryview | np.ndarray, seed: int,
                    path: object, first_line: int, on_bad: str = "error"
                    ) -> tuple[Parsed, int]:
    """What ``parse_bytes`` gives, by the reference alone: the bytes decoded (bad UTF-8
    replaced), split at newlines, each line parsed in Python."""
    text = bytes(data).decode("utf-8", errors="replace")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return parse_block(fmt, lines, seed, path, first_line, on_bad)


def parse_label(text: str) -> float:
    """A label 0/1 or -1/+1 (also as 1.0, -1.0): 1.0 for a click, else 0.0."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value == 1.0:
        return 1.0
    if value in (0.0, -1.0):
        return 0.0
    raise BadLine(f"label {text!r} is not 0/1 or -1/+1")
