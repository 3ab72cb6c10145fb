"""Text lines without a label column (data to score, such as Criteo's own test set).

Such a line gets a placeholder label of 0 where the format has its label, then goes
through the format's own parser, so its keys and values are exactly those of the same
line with a label. Whether a file has labels is told by its first data line (CSV: by
whether its header has the label column).
"""
from __future__ import annotations

from typing import Any

from .csvdata import CsvFormat, CsvSchema
from .parse import Format, Parsed

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
