"""Text lines without a label column (data to score, such as Criteo's own test set).

Such a line gets a placeholder label of 0 where the format has its label, then goes
through the format's own parser, so its keys and values are exactly those of the same
line with a label. Whether a file has labels is told by its first data line (CSV: by
whether its header has the label column).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .csvdata import CsvFormat, CsvSchema
from .parse import Format, Parsed
from .scan import strip_cr

CRITEO_COLUMNS = 40


class Unlabeled:
    """``fmt`` for lines that lack the label: ``prefix + line + suffix`` is parsed."""

    def __init__(self, fmt: Format, prefix: str = "", suffix: str = "") -> None:
        self.fmt, self.prefix, self.suffix = fmt, prefix, suffix
        self.name, self.fields, self.names = fmt.name, fmt.fields, fmt.names
        self.padded, self.header = fmt.padded, fmt.header

    def start(self, n: int) -> Any:
        return self.fmt.start(n)

    def line(self, block: Any, i: int, text: str) -> None:
        self.fmt.line(block, i, self.prefix + text + self.suffix)

    def finish(self, block: Any, seed: int) -> Parsed:
        return self.fmt.finish(block, seed)

    def compiled(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, seed: int
                 ) -> tuple[Parsed, np.ndarray]:
        """The format's kernel on the lines with the placeholder put in (their trailing
        carriage returns left out, as the reference strips them)."""
        pre = np.frombuffer(self.prefix.encode(), np.uint8)
        suf = np.frombuffer(self.suffix.encode(), np.uint8)
        ends = ends.copy()
        for i in np.flatnonzero(ends > starts):
            ends[i] = strip_cr(buf, int(starts[i]), int(ends[i]))
        n = ends - starts
        size = n + pre.size + suf.size
        first = np.cumsum(size) - size
        out = np.empty(int(size.sum()), np.uint8)
        for k, byte in enumerate(pre):
            out[first + k] = byte
        src = np.repeat(starts - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
        out[np.repeat(first + pre.size - starts, n) + src] = buf[src]
        for k, byte in enumerate(suf):
            out[first + pre.size + n + k] = byte
        return self.fmt.compiled(out, first, first + size, seed)


def has_label(fmt: Format, first_line: str) -> bool:
    """Does a file in ``fmt`` whose first data line is ``first_line`` carry labels?
    Criteo: 40 columns (39: none); libSVM/libFFM: the first token is not ``idx:val``."""
    text = first_line.rstrip("\r\n")
    if fmt.name == "criteo":
        return len(text.split("\t")) != CRITEO_COLUMNS - 1
    if fmt.name in ("libsvm", "libffm"):
        tokens = text.split()
        return not tokens or ":" not in tokens[0]
    return True


def without_label(fmt: Format) -> Unlabeled:
    """Criteo and libSVM/libFFM lines lacking their leading label."""
    return Unlabeled(fmt, prefix="0\t" if fmt.name == "criteo" else "0 ")


def csv_without_label(schema: CsvSchema, header: list[str]) -> Unlabeled:
    """CSV rows under a ``header`` that lacks the schema's label column: the label is
    read from a placeholder column added at the end."""
    return Unlabeled(CsvFormat(schema, [*header, schema.label]), suffix=schema.delimiter + "0")
