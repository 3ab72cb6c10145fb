"""Lines of text inputs by byte position, found by counting bytes, never parsing: line
counts, where given lines start, the longest line's ``:`` count, blocks of whole lines,
and the parts that several inputs are cut into for ``mpips prep``.

Positions are in the decompressed bytes of a compressed input (``mpips.data.compressed``),
which is read as a stream; a compressed file is never cut into parts.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Optional, Sequence, Union

import numpy as np

from .compressed import codec, input_size, open_input

CHUNK = 1 << 22           # bytes read at a time
NL, COLON = 10, 58
Input = Union[str, Path, IO[bytes]]


@contextmanager
def _opened(src: Input) -> Iterator[IO[bytes]]:
    """An open stream as it is, or a path opened (and closed after)."""
    if isinstance(src, (str, Path)):
        with open_input(src) as fh:
            yield fh
    else:
        yield src


def _chunks(fh: IO[bytes], stop: Optional[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(position, bytes as uint8) of ``fh`` from its position up to byte ``stop`` (None:
    the end)."""
    pos = fh.tell()
    while stop is None or pos < stop:
        data = fh.read(CHUNK if stop is None else min(CHUNK, stop - pos))
        if not data:
            return
        yield pos, np.frombuffer(data, dtype=np.uint8)
        pos += len(data)


def count_lines(src: Input, begin: int = 0, end: Optional[int] = None) -> int:
    """Lines starting in bytes [begin, end) (a last line without a newline counts);
    ``begin`` must be a line start."""
    n, last = 0, NL
    with _opened(src) as fh:
        fh.seek(begin)
        for _, a in _chunks(fh, end):
            n += int(np.count_nonzero(a == NL))
            last = int(a[-1])
    return n + (last != NL)


def line_offsets(src: Input, lines: np.ndarray) -> np.ndarray:
    """Byte offsets where the 0-based ``lines`` (ascending) start; a line past the last
    one starts at the input's end. One pass, stopping at the last line wanted."""
    lines = np.asarray(lines, dtype=np.int64)
    out = np.full(lines.size, -1, dtype=np.int64)
    out[lines == 0] = 0
    seen, end = 0, 0                           # newlines before the current chunk
    with _opened(src) as fh:
        fh.seek(0)
        for pos, a in _chunks(fh, None):
            if lines.size == 0 or seen >= lines[-1]:
                break
            nl = np.flatnonzero(a == NL) + pos
            hit = (lines > seen) & (lines <= seen + nl.size)
            out[hit] = nl[lines[hit] - seen - 1] + 1
            seen, end = seen + nl.size, pos + a.size
    out[out < 0] = end
    return out


def max_colons(src: Input, begin: int = 0, end: Optional[int] = None) -> int:
    """The most ``:`` on any line starting in [begin, end): a bound on libSVM features."""
    best, carry = 0, 0
    with _opened(src) as fh:
        fh.seek(begin)
        for _, a in _chunks(fh, end):
            nl = np.flatnonzero(a == NL)
            line_of = np.searchsorted(nl, np.flatnonzero(a == COLON))
            counts = np.bincount(line_of, minlength=nl.size + 1)
            counts[0] += carry
            best = max(best, int(counts[:nl.size].max(initial=0)))
            carry = int(counts[nl.size])
    return max(best, carry)


def line_start(path: Path, pos: int) -> int:
    """The first line start at or after byte ``pos`` of a plain file (its size if none)."""
    size = input_size(path)
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
    """The lines in bytes [begin, end) (line starts), without their newlines: the
    reference parser's input."""
    fh.seek(begin)
    text = fh.read(end - begin).decode("utf-8", errors="replace")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def line_blocks(fh: IO[bytes], begin: int = 0, end: Optional[int] = None
                ) -> Iterator[memoryview]:
    """Bytes [begin, end) of ``fh`` (line starts; None: to the end) in blocks of whole
    lines of about ``CHUNK`` bytes, read once, in order."""
    fh.seek(begin)
    pos, carry = begin, b""
    while end is None or pos < end:
        data = fh.read(CHUNK if end is None else min(CHUNK, end - pos))
        if not data:
            break
        pos += len(data)
        data = carry + data if carry else data
        cut = data.rfind(b"\n") + 1
        if cut:
            yield memoryview(data)[:cut]
        carry = data[cut:]
    if carry:
        yield memoryview(carry)


@dataclass(frozen=True)
class Piece:
    """Bytes [begin, end) of input ``file`` (both line starts); a compressed file is one
    piece from 0 to its compressed size, read whole."""

    file: int
    begin: int
    end: int

    def stop(self, path: Path) -> Optional[int]:
        """Where reading the piece of ``path`` stops: its end, or None (the stream's end)
        for a compressed file."""
        return None if codec(path) else self.end


def split_inputs(paths: Sequence[Path], parts: int) -> list[list[Piece]]:
    """The inputs, as one byte sequence, cut into ``parts`` near-equal parts at line starts.
    Part ``j`` holds the lines whose first byte lies in [j*total/parts, (j+1)*total/parts),
    and each compressed file whole, in the part that holds its middle byte; parts keep the
    input order, so concatenated they give every line once, in order."""
    sizes = [input_size(p) for p in paths]
    firsts = np.concatenate([[0], np.cumsum(sizes)])
    total = int(firsts[-1])
    cuts = [total * j // parts for j in range(parts + 1)]
    out = []
    for lo, hi in zip(cuts, cuts[1:]):
        pieces = []
        for f, path in enumerate(paths):
            if codec(path):
                middle = int(firsts[f]) + sizes[f] // 2
                if lo <= middle < hi:
                    pieces.append(Piece(f, 0, sizes[f]))
                continue
            a = line_start(path, max(lo - int(firsts[f]), 0)) if lo > firsts[f] else 0
            b = line_start(path, min(hi - int(firsts[f]), sizes[f])) if hi < firsts[f + 1] \
                else sizes[f]
            if a < b:
                pieces.append(Piece(f, a, b))
        out.append(pieces)
    return out
