"""Text inputs as byte streams: plain files, and ``.gz`` / ``.zst`` files decompressed as
they are read, a bounded chunk at a time (never the whole file in memory).

gzip is inflated by zlib-ng (``zlib_ng``: about twice the standard library's zlib here,
see benchmarks/README.md), whose decompressor state can be copied: a ``.gz`` stream keeps
such copies every ``SNAPSHOT_BYTES`` of output as it goes, so that a later ``seek`` back
restarts from the nearest one instead of from the file's start, and training can read its
batches in any order. A zstd stream (``zstandard``) has no such copies: ``.zst`` inputs are
for ``mpips prep``, which reads each file once, in order.
"""
from __future__ import annotations

import io
import zlib
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

from zlib_ng import zlib_ng

from ..errors import DataError

CODECS = {".gz": "gzip", ".zst": "zstd"}
RAW_CHUNK = 1 << 20            # compressed bytes fed to the decompressor at a time
SNAPSHOT_BYTES = 1 << 25       # output bytes between two kept decompressor states


def codec(path: Path) -> Optional[str]:
    """``gzip``, ``zstd`` or None (plain text), by the file's suffix."""
    return CODECS.get(Path(path).suffix.lower())


@dataclass
class _Snapshot:
    out: int                   # decompressed bytes before this point
    raw: int                   # compressed bytes before it
    state: Any                 # a copy of the decompressor there


class Decompressed(io.RawIOBase):
    """The decompressed bytes of ``path`` as a read-only stream: ``read``, ``tell``, and
    ``seek`` to any position already passed or ahead (gzip: from the nearest snapshot)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path, self.codec = Path(path), codec(path)
        self._raw = open(self.path, "rb")
        self._snapshots: list[_Snapshot] = []
        self._restart(None)

    # -- reading -----------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._out - (len(self._buf) - self._at)

    @property
    def consumed(self) -> int:
        """Compressed bytes read so far (for progress)."""
        return self._raw.tell()

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` decompressed bytes (all that is left for n < 0); b"" at the end."""
        out, need = [], n if n >= 0 else float("inf")
        while need > 0:
            if self._at == len(self._buf):
                if self._done:
                    break
                self._buf, self._at = self._more(), 0
                continue
            take = int(min(need, len(self._buf) - self._at))
            out.append(self._buf[self._at:self._at + take])
            self._at += take
            need -= take
        return out[0] if len(out) == 1 else b"".join(out)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        """Go to decompressed byte ``pos``: forward by reading, back (or far ahead) from
        the nearest snapshot before it, else from the start."""
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("seek from the start only")
        here = self.tell()
        if pos < here or pos - here > SNAPSHOT_BYTES:
            at = bisect_right([s.out for s in self._snapshots], pos) - 1
            snap = self._snapshots[at] if at >= 0 else None
            if pos < here or (snap is not None and snap.out > here):
                self._restart(snap)
        while self.tell() < pos and self.read(min(pos - self.tell(), RAW_CHUNK)):
            pass
        return self.tell()

    def close(self) -> None:
        self._raw.close()
        super().close()

    # -- the decompressor --------------------------------------------------------------
    def _restart(self, snap: Optional[_Snapshot]) -> None:
        self._raw.seek(snap.raw if snap else 0)
        self._out = snap.out if snap else 0
        self._state = snap.state.copy() if snap else self._new()
        self._buf, self._at = b"", 0              # output not yet read, and where
        self._done = False

    def _new(self) -> Any:
        if self.codec == "gzip":
            return zlib_ng.decompressobj(wbits=31)
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{self.path}: reading .zst needs the zstandard package "
                            f"(pip install 'mpips[zstd]')") from None
        return zstandard.ZstdDecompressor().decompressobj()

    def _more(self) -> bytes:
        """The output of the next compressed chunk (maybe empty); sets ``_done`` at the
        end of the file."""
        chunk = self._raw.read(RAW_CHUNK)
        try:
            out = self._feed(chunk) if chunk else b""
        except (zlib.error, zlib_ng.error, ValueError, EOFError) as exc:
            raise DataError(f"{self.path}: not a valid {self.codec} file ({exc})") from None
        if not chunk:
            self._done = True
            if not self._state.eof:
                raise DataError(f"{self.path}: truncated {self.codec} file: it ends "
                                f"before its end-of-stream marker, after {self._out:,} "
                                f"decompressed bytes")
        self._out += len(out)
        if self.codec == "gzip" and self._out - self._last_snapshot() >= SNAPSHOT_BYTES \
                and not self._state.eof:
            self._snapshots.append(_Snapshot(self._out, self._raw.tell(),
                                             self._state.copy()))
        return out

    def _feed(self, chunk: bytes) -> bytes:
        """Decompress ``chunk``; a new gzip member (or zstd frame) may start in it."""
        out = [self._state.decompress(chunk)]
        while self._state.eof and self._state.unused_data:
            rest = self._state.unused_data
            if self.codec == "gzip" and not rest.strip(b"\0"):
                break                            # zero padding after the last member
            self._state = self._new()
            out.append(self._state.decompress(rest))
        return b"".join(out)

    def _last_snapshot(self) -> int:
        return self._snapshots[-1].out if self._snapshots else 0


def open_input(path: Union[str, Path]) -> BinaryIO:
    """A text input's bytes, decompressed if its suffix says so; seekable either way."""
    path = Path(path)
    return Decompressed(path) if codec(path) else open(path, "rb")  # type: ignore


def input_size(path: Path) -> int:
    """Bytes of the input as stored (compressed bytes for a compressed file)."""
    return Path(path).stat().st_size
