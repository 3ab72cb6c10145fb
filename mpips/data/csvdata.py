"""CSV with a header, read by a schema: which column is the label, which are numeric and
which categorical (other columns are ignored). One record per line (no quoted newlines).

Numeric values are bucketised by half-octaves of their magnitude, with their sign, and a
category is hashed from its UTF-8 bytes; empty cells are a 'missing' value of their own.
Fields are the numeric columns, then the categorical ones, in schema order.

``CsvFormat.line`` is the reference parser (Python's ``csv`` module); ``CsvFormat.compiled``
parses lines without quotes in a numba kernel into the same ids.
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

from ..errors import ConfigError, DataError
from .blake2 import blake2b64
from .compressed import open_input
from .hashing import MISSING, FieldHashing, hash_ids, salts
from .parse import BadLine, Parsed, parse_label
from .scan import OK, REFERENCE, SLOW, SPACE, TAB, half_octave, mix, scan_float, strip_cr

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
    with open_input(path) as fh:
        first = fh.readline().decode("utf-8", errors="replace").rstrip("\r\n").lstrip("\ufeff")
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
        self._kind = np.zeros(self.width, np.int64)       # per column: _IGNORED ...
        self._slot = np.zeros(self.width, np.int64)       # its field
        self._kind[self._label] = _LABEL
        for slot, j in enumerate(self._nums + self._cats):
            self._kind[j] = _NUMERIC if slot < len(self._nums) else _CATEGORICAL
            self._slot[j] = slot

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

    def compiled(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, seed: int
                 ) -> tuple[Parsed, np.ndarray]:
        """Lines [starts, ends) of ``buf`` -> (their rows, which lines were parsed). Lines
        with a quote go to the reference; numbers the exact fast path cannot convert are
        converted by Python's ``float`` and bucketised by ``float_buckets`` here."""
        n, d = starts.size, ord(self.schema.delimiter)
        ids = np.empty((n, self.fields), np.uint64)
        labels = np.empty(n, np.float32)
        present = np.empty((n, self.fields), bool)
        slow = np.full(n, REFERENCE, np.int64)
        salt = salts(np.arange(self.fields), seed)
        if d < 128 and (d >= SPACE or d == TAB) and d != _QUOTE:
            _csv_rows(buf, starts, ends, d, self._kind, self._slot, salt, ids, labels,
                      present, slow)
        rows = np.flatnonzero(slow > 0)
        if rows.size:
            where = np.empty((int(slow[rows].sum()), 4), np.int64)
            _slow_cells(buf, starts, ends, rows, d, self._kind, self._slot, where)
            values = np.array([float(buf[a:b].tobytes()) for _, _, a, b in where])
            bad = ~np.isfinite(values)
            slow[where[bad, 0]] = REFERENCE
            raw = float_buckets(values)
            ids[where[:, 0], where[:, 1]] = hash_ids(raw, salt[where[:, 1]])
            present[where[:, 0], where[:, 1]] = True
        return Parsed(ids, np.ones(ids.shape, np.float32), labels, present), slow >= 0


_IGNORED, _LABEL, _NUMERIC, _CATEGORICAL = 0, 1, 2, 3
_QUOTE = 34
_TRUE, _FALSE = np.frombuffer(b"true", np.uint8), np.frombuffer(b"false", np.uint8)


@nb.njit(cache=True, nogil=True)
def _plain_cells(buf: np.ndarray, a: int, b: int) -> bool:
    """No quote and no control byte but TAB: cells are what lies between delimiters."""
    for i in range(a, b):
        c = buf[i]
        if c == _QUOTE or (c < SPACE and c != TAB):
            return False
    return True


@nb.njit(cache=True, nogil=True)
def _stripped(buf: np.ndarray, a: int, b: int) -> tuple[int, int, bool]:
    """Cell [a, b) without surrounding spaces and TABs, and whether it is ASCII."""
    while a < b and (buf[a] == SPACE or buf[a] == TAB):
        a += 1
    while b > a and (buf[b - 1] == SPACE or buf[b - 1] == TAB):
        b -= 1
    for i in range(a, b):
        if buf[i] > 127:
            return a, b, False
    return a, b, True


@nb.njit(cache=True, nogil=True)
def _word(buf: np.ndarray, a: int, b: int, word: np.ndarray) -> bool:
    """Whether [a, b) is ``word`` in any ASCII case."""
    if b - a != len(word):
        return False
    for k in range(b - a):
        if buf[a + k] | 32 != word[k]:
            return False
    return True


@nb.njit(cache=True, nogil=True)
def _label(buf: np.ndarray, a: int, b: int) -> float:
    """1.0 or 0.0, or -1.0 for a label left to the reference."""
    a, b, ascii_ = _stripped(buf, a, b)
    if not ascii_:
        return -1.0
    if _word(buf, a, b, _TRUE):
        return 1.0
    if _word(buf, a, b, _FALSE):
        return 0.0
    status, v = scan_float(buf, a, b)
    if status != OK or not (v == 1.0 or v == 0.0 or v == -1.0):
        return -1.0
    return 1.0 if v == 1.0 else 0.0


@nb.njit(cache=True, nogil=True)
def _number_raw(v: float) -> tuple[bool, np.uint64]:
    """``float_buckets`` of one finite value, and whether its bucket is certain."""
    if v == 0.0:
        return True, _BUCKET_BASE
    mantissa, _ = math.frexp(abs(v))
    sure, k = half_octave(abs(v), mantissa == 0.5)
    k = min(max(k, -200), 200)
    return sure, np.uint64((1000 if v > 0 else 2000) + k + 200) + _BUCKET_BASE


@nb.njit(cache=True, nogil=True)
def _csv_line(buf, a, b, delim, kind, slot, salt, ids, present, i, work) -> tuple[int, float]:
    """Cells of one line into row ``i``: (SLOW numbers or REFERENCE, label)."""
    col, at, slow, label = 0, a, 0, -1.0
    while True:
        end = at
        while end < b and buf[end] != delim:
            end += 1
        if col >= kind.size:
            return REFERENCE, label
        k = kind[col]
        if k == _LABEL:
            label = _label(buf, at, end)
            if label < 0:
                return REFERENCE, label
        elif k == _NUMERIC:
            na, nb_, ascii_ = _stripped(buf, at, end)
            raw = MISSING
            if not ascii_:
                return REFERENCE, label
            if nb_ > na:
                status, v = scan_float(buf, na, nb_)
                sure, raw = _number_raw(v)
                if status == SLOW:
                    slow += 1
                elif status != OK or not sure:
                    return REFERENCE, label
            ids[i, slot[col]] = mix(raw ^ salt[slot[col]])
            present[i, slot[col]] = raw != MISSING
        elif k == _CATEGORICAL:
            raw = blake2b64(buf, at, end, work) if end > at else MISSING
            ids[i, slot[col]] = mix(raw ^ salt[slot[col]])
            present[i, slot[col]] = raw != MISSING
        col += 1
        if end == b:
            break
        at = end + 1
    return (slow if col == kind.size else REFERENCE), label


@nb.njit(cache=True, nogil=True)
def _csv_rows(buf, starts, ends, delim, kind, slot, salt, ids, labels, present, slow):
    work = np.empty(40, np.uint64)
    for i in range(starts.size):
        a, b = starts[i], strip_cr(buf, starts[i], ends[i])
        if b > a and _plain_cells(buf, a, b) and _valid_utf8(buf, a, b):
            slow[i], labels[i] = _csv_line(buf, a, b, delim, kind, slot, salt, ids, present,
                                           i, work)


@nb.njit(cache=True, nogil=True)
def _slow_cells(buf, starts, ends, rows, delim, kind, slot, where) -> None:
    """(row, field, start, end) of each SLOW number of lines ``rows``, in ``where``."""
    n = 0
    for i in rows:
        b = strip_cr(buf, starts[i], ends[i])
        col, at = 0, starts[i]
        while True:
            end = at
            while end < b and buf[end] != delim:
                end += 1
            if kind[col] == _NUMERIC:
                na, nb_, _ = _stripped(buf, at, end)
                if nb_ > na and scan_float(buf, na, nb_)[0] == SLOW:
                    where[n, 0], where[n, 1], where[n, 2], where[n, 3] = i, slot[col], na, nb_
                    n += 1
            col += 1
            if end == b:
                break
            at = end + 1


@nb.njit(cache=True, nogil=True)
def _valid_utf8(buf: np.ndarray, a: int, b: int) -> bool:
    """Whether [a, b) is UTF-8 that Python decodes strictly (no overlong forms, no
    surrogates, nothing past U+10FFFF): then decoding and encoding give its bytes back."""
    i = a
    while i < b:
        c = buf[i]
        if c < 128:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            n, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            n = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            n = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return False
        if i + n >= b:
            return False
        if not lo <= buf[i + 1] <= hi:
            return False
        for k in range(2, n + 1):
            if not 0x80 <= buf[i + k] <= 0xBF:
                return False
        i += n + 1
    return True
