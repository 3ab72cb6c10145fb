"""Lines of text files by byte position, found by counting bytes, never parsing: line
counts, where given lines start, the longest line's ``:`` count, and byte ranges that
split several files into parts at line starts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np

CHUNK = 1 << 22           # bytes read at a time
NL, COLON = 10, 58


def _chunks(fh: IO[bytes], stop: int) -> Iterator[tuple[int, np.ndarray]]:
    """(position, bytes as uint8) of ``fh`` from its position up to byte ``stop``."""
    pos = fh.tell()
    while pos < stop:
        data = fh.read(min(CHUNK, stop - pos))
        if not data:
            return
        yield pos, np.frombuffer(data, dtype=np.uint8)
        pos += len(data)


def count_lines(path: Path, begin: int = 0, end: int | None = None) -> int:
    """Lines starting in bytes [begin, end) (a last line without a newline counts);
    ``begin`` must be a line start."""
    n, last = 0, NL
    with open(path, "rb") as fh:
        fh.seek(begin)
        for _, a in _chunks(fh, _size(path) if end is None else end):
            n += int(np.count_nonzero(a == NL))
            last = int(a[-1])
    return n + (last != NL)


def line_offsets(path: Path, lines: np.ndarray) -> np.ndarray:
    """Byte offsets where the 0-based ``lines`` (ascending) start; a line past the last
    one starts at the file's size. One pass, stopping at the last line wanted."""
    lines = np.asarray(lines, dtype=np.int64)
    out = np.full(lines.size, _size(path), dtype=np.int64)
    out[lines == 0] = 0
    if lines.size == 0:
        return out
    seen = 0                                   # newlines before the current chunk
    with open(path, "rb") as fh:
        for pos, a in _chunks(fh, _size(path)):
            if seen >= lines[-1]:
                break
            nl = np.flatnonzero(a == NL) + pos
            hit = (lines > seen) & (lines <= seen + nl.size)
            out[hit] = nl[lines[hit] - seen - 1] + 1
            seen += nl.size
    return out


def max_colons(path: Path, begin: int = 0, end: int | None = None) -> int:
    """The most ``:`` on any line starting in [begin, end): a bound on libSVM features."""
    best, carry = 0, 0
    with open(path, "rb") as fh:
        fh.seek(begin)
        for _, a in _chunks(fh, _size(path) if end is None else end):
            nl = np.flatnonzero(a == NL)
            line_of = np.searchsorted(nl, np.flatnonzero(a == COLON))
            counts = np.bincount(line_of, minlength=nl.size + 1)
            counts[0] += carry
            best = max(best, int(counts[:nl.size].max(initial=0)))
            carry = int(counts[nl.size])
    return max(best, carry)


def line_start(path: Path, pos: int) -> int:
    """The first line start at or after byte ``pos`` (the file's size if none)."""
    size = _size(path)
    if pos <= 0 or pos >= size:
        return min(max(pos, 0), size)
    with open(path, "rb") as fh:
        fh.seek(pos - 1)
        for at, a in _chunks(fh, size):
            nl = np.flatnonzero(a == NL)
            if nl.size:
                return at + int(nl[0]) + 1
    return size


def read_lines(fh: IO[bytes], begin: int, end: int) -> list[str]:
    """The lines in bytes [begin, end) (line starts), without their newlines."""
    fh.seek(begin)
    text = fh.read(end - begin).decode("utf-8", errors="replace")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def blocks(path: Path, begin: int, end: int, size: int = CHUNK) -> Iterator[tuple[int, int]]:
    """Bytes [begin, end) cut at line starts into pieces of about ``size`` bytes."""
    while begin < end:
        cut = min(line_start(path, begin + size), end)
        yield begin, cut
        begin = cut


@dataclass(frozen=True)
class Piece:
    """Bytes [begin, end) of input ``file``; both are line starts."""

    file: int
    begin: int
    end: int


def split_inputs(paths: Sequence[Path], parts: int) -> list[list[Piece]]:
    """The inputs, as one byte sequence, cut into ``parts`` near-equal parts at line starts.
    Part ``j`` holds the lines whose first byte lies in [j*total/parts, (j+1)*total/parts);
    parts keep the input order, so concatenated they give every line once, in order."""
    sizes = [_size(p) for p in paths]
    firsts = np.concatenate([[0], np.cumsum(sizes)])
    total = int(firsts[-1])
    cuts = [total * j // parts for j in range(parts + 1)]
    out = []
    for lo, hi in zip(cuts, cuts[1:]):
        pieces = []
        for f, path in enumerate(paths):
            a = line_start(path, max(lo - int(firsts[f]), 0)) if lo > firsts[f] else 0
            b = line_start(path, min(hi - int(firsts[f]), sizes[f])) if hi < firsts[f + 1] \
                else sizes[f]
            if a < b:
                pieces.append(Piece(f, a, b))
        out.append(pieces)
    return out


def _size(path: Path) -> int:
    return Path(path).stat().st_size
