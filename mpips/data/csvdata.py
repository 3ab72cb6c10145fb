"""CSV with a header, read by a schema: which column is the label, which are numeric and
which categorical (other columns are ignored). One record per line (no quoted newlines).

Numeric values are bucketised by half-octaves of their magnitude, with their sign, and a
category is hashed from its UTF-8 bytes; empty cells are a 'missing' value of their own.
Fields are the numeric columns, then the categorical ones, in schema order.
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .hashing import MISSING, FieldHashing
from .parse import BadLine, Parsed, parse_label

_MISSING = int(MISSING)
_BUCKET_BASE = np.uint64(1 << 32)


@dataclass(frozen=True)
class CsvSchema:
    """The ``[csv]`` section of the config file."""

    label: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    delimiter: str = ","

    def __post_init__(self) -> None:
        names = [self.label, *self.numeric, *self.categorical]
        if len(set(names)) != len(names):
            raise ConfigError("csv: a column is named twice in label, numeric, categorical")
        if not self.numeric and not self.categorical:
            raise ConfigError("csv: give at least one numeric or categorical column")
        if len(self.delimiter) != 1:
            raise ConfigError(f"csv.delimiter must be one character, not {self.delimiter!r}")

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


def read_header(path: Path, schema: CsvSchema, label: bool = True) -> list[str]:
    """The header's column names; an error names the file and a schema column it lacks
    (the label column too, unless ``label`` is False: data to score may lack it)."""
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as fh:
        first = fh.readline().rstrip("\r\n").lstrip("\ufeff")
    header = next(csv.reader([first], delimiter=schema.delimiter), [])
    for name in (schema.label, *schema.columns) if label else schema.columns:
        if name not in header:
            raise DataError(f"{path}: the header has no column {name!r} (the [csv] schema "
                            f"names it); header: {', '.join(header[:12])}")
    return header


def float_buckets(values: np.ndarray) -> np.ndarray:
    """Real values -> raw uint64 bucket ids: sign and half-octave of |v|; 0 and NaN
    (missing) have their own."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        octave = np.clip(np.floor(2.0 * np.log2(np.abs(v))), -200, 200)
    bucket = np.where(v > 0, 1000, 2000) + np.nan_to_num(octave) + 200
    bucket = np.where(v == 0, 0, bucket).astype(np.uint64) + _BUCKET_BASE
    return np.where(np.isnan(v), MISSING, bucket)


def category_id(text: str) -> int:
    """A stable 64-bit value of a category's bytes."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclass
class _Block:
    labels: np.ndarray
    nums: np.ndarray       # float64, NaN = missing
    cats: np.ndarray       # uint64


class CsvFormat:
    """CSV rows of a file whose header is ``header``, read by ``schema``."""

    name = "csv"
    padded = False
    header = True

    def __init__(self, schema: CsvSchema, header: list[str]) -> None:
        self.schema, self.header_names = schema, header
        self.width = len(header)
        self.names = schema.columns
        self.fields = len(self.names)
        self._label = header.index(schema.label)
        self._nums = [header.index(c) for c in schema.numeric]
        self._cats = [header.index(c) for c in schema.categorical]

    def start(self, n: int) -> _Block:
        return _Block(np.empty(n, np.float32), np.empty((n, len(self._nums)), np.float64),
                      np.empty((n, len(self._cats)), np.uint64))

    def line(self, block: _Block, i: int, text: str) -> None:
        try:
            cells = next(csv.reader([text], delimiter=self.schema.delimiter, strict=True), [])
        except csv.Error as exc:
            raise BadLine(f"not valid CSV: {exc}") from None
        if len(cells) != self.width:
            raise BadLine(f"expected {self.width} columns, found {len(cells)}")
        block.labels[i] = self._parse_label(cells[self._label])
        for k, j in enumerate(self._nums):
            block.nums[i, k] = self._number(cells[j].strip(), j)
        block.cats[i] = [category_id(cells[j]) if cells[j] else _MISSING for j in self._cats]

    def _parse_label(self, text: str) -> float:
        word = text.strip().lower()
        if word in ("true", "false"):
            return float(word == "true")
        try:
            return parse_label(word)
        except BadLine:
            raise BadLine(f"label {text!r} is not 0/1, -1/+1 or true/false") from None

    def _number(self, text: str, column: int) -> float:
        if not text:
            return math.nan
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise BadLine(f"column {column + 1} ({self.header_names[column]}) {text!r} is "
                          f"not a number")
        return value

    def finish(self, block: _Block, seed: int) -> Parsed:
        raw = np.concatenate([float_buckets(block.nums), block.cats], axis=1)
        ids = FieldHashing(1, seed).ids(raw)
        return Parsed(ids, np.ones(ids.shape, np.float32), block.labels, raw != MISSING)
