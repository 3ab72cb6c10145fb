"""Push codecs: how a table's gradient rows and their shard offsets travel. Pure, no MPI.

Keys, for every codec: a server's offsets sorted and delta-coded as varints
(``kernels.varint``). Values, one fixed-width record per row:

| codec  | a row of ``d`` values                                              | bytes    |
| ------ | ------------------------------------------------------------------ | -------- |
| `none` | float32 as they are                                                | 4 d      |
| `fp16` | IEEE half, round to nearest even, clipped to ±65504                | 2 d      |
| `bf16` | the float32's top 16 bits, round to nearest even                   | 2 d      |
| `int8` | a power-of-two scale ``2**e`` (int8) and an integer offset ``z``   | 3 + d    |
|        | (int16) per row, then a code ``q`` (uint8) a value: ``(q+z)·2**e`` |          |

Rounding is deterministic (to nearest, ties to even: no randomness), so the same rows give
the same bytes on every rank and in every run. Decoding gives float32 computed the same way
everywhere, and the difference between a value and its decoding is itself exact in
float32 (the scales are powers of two and a value's neighbours lie within a factor two), so
error feedback (``residuals``) keeps every bit of what a codec rounds away. ``topk`` is
not a wire format: the worker picks the rows to send (``residuals.feedback``) and codes them
with the table's value codec.

The same value codecs code pulls (``--pull-codec``, ``pull_codec``): a server keeps a coded
mirror of a table's rows beside them (``ShardStore``), and workers read and decode that.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import ConfigError, ProtocolError
from .kernels.quant import half_code, half_decode, int8_code, int8_decode
from .kernels.varint import varint_decode, varint_encode

RAW, FP16, BF16, INT8 = 0, 1, 2, 3
NAMES = {"none": RAW, "fp16": FP16, "bf16": BF16, "int8": INT8}
CODEC_NAMES = {v: k for k, v in NAMES.items()}
CHOICES = ("none", "fp16", "bf16", "int8", "topk", "topk+fp16", "topk+bf16", "topk+int8")
PULL_CHOICES = ("none", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class Compression:
    """A table's push compression: its value ``codec`` and, for ``topk``, the share of
    its rows sent each step (``keep``; None: all rows)."""

    codec: int = RAW
    keep: Optional[float] = None

    @property
    def lossy(self) -> bool:
        """Does the worker hold something back (rounding or rows), so that it needs error
        feedback?"""
        return self.codec != RAW or self.keep is not None

    @property
    def name(self) -> str:
        value = CODEC_NAMES[self.codec]
        if self.keep is None:
            return value
        return "topk" if self.codec == RAW else f"topk+{value}"

    def for_rows_of(self, dim: int) -> "Compression":
        """This compression for a table of ``dim``-value rows: with float32 values where
        the value codec would not make them smaller (``int8`` of one value: 4 bytes, as
        float32, and a rounding to carry), so nothing is rounded for nothing."""
        return self if shrinks(self.codec, dim) else Compression(RAW, self.keep)

    @classmethod
    def parse(cls, text: str, keep: float, where: str) -> "Compression":
        """``none|fp16|bf16|int8|topk|topk+VALUE`` with ``keep`` for topk; a bad name is a
        ``ConfigError`` naming ``where``."""
        if text not in CHOICES:
            raise ConfigError(f"{where}: compress must be one of {', '.join(CHOICES)}, got "
                              f"{text!r}")
        if not 0 < keep <= 1:
            raise ConfigError(f"--compress-keep must lie in (0, 1], got {keep}")
        if text.startswith("topk"):
            return cls(NAMES[text.partition("+")[2] or "none"], keep)
        return cls(NAMES[text])


def pull_codec(text: str, where: str) -> int:
    """The value codec of a table's pulls, ``none|fp16|bf16|int8``; a bad name is a
    ``ConfigError`` naming ``where``."""
    if text not in PULL_CHOICES:
        raise ConfigError(f"{where}: pull-codec must be one of {', '.join(PULL_CHOICES)}, "
                          f"got {text!r}")
    return NAMES[text]


def row_bytes(codec: int, dim: int) -> int:
    """Bytes of one coded row of ``dim`` values."""
    if codec == RAW:
        return 4 * dim
    if codec in (FP16, BF16):
        return 2 * dim
    if codec == INT8:
        return 3 + dim
    raise ProtocolError(f"unknown codec {codec}")


def shrinks(codec: int, dim: int) -> bool:
    """Does ``codec`` code a row of ``dim`` values in fewer bytes than float32?"""
    return row_bytes(codec, dim) < 4 * dim


# ---- values --------------------------------------------------------------------------------
def _code(codec: int, rows: np.ndarray, rest: bool) -> tuple[np.ndarray, int]:
    """Coded records of float32 ``rows`` (C order) and, with ``rest``, how many rows the
    coder left something in (``kernels.quant``)."""
    n, d = rows.shape
    if codec == RAW:
        return rows.view(np.uint8).reshape(n, 4 * d), 0
    out = np.empty((n, row_bytes(codec, d)), dtype=np.uint8)
    return out, code_rows_at(codec, rows, out, np.arange(n, dtype=np.int64), rest)


def code_rows_at(codec: int, rows: np.ndarray, out: np.ndarray, index: np.ndarray,
                 rest: bool = False) -> int:
    """Code the float32 ``rows`` (C order) that ``index`` names into the same rows of
    ``out`` (uint8 records, C order), in place: a coded mirror's rows that a step updated.
    With ``rest`` (error feedback) returns how many rows the coder left something in."""
    if codec in (FP16, BF16):
        return half_code(rows, out.view(np.uint16), rest, codec == BF16, index)
    if codec == INT8:
        return int8_code(rows, out, rest, index)
    raise ProtocolError(f"unknown codec {codec}")


def encode_rows(codec: int, rows: np.ndarray) -> np.ndarray:
    """Float32 rows ``(n, d)`` as coded records ``(n, row_bytes)`` of uint8 (for ``none``
    a view of ``rows`` when they are contiguous)."""
    return _code(codec, np.ascontiguousarray(rows, dtype=np.float32), False)[0]


def send_rows(codec: int, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Code float32 ``rows`` (C order, changed in place) for sending and leave in each row
    what the rounding took off, exactly (``rows - decode(records)`` in float32): error
    feedback's one pass. Returns the records and how many rows kept something."""
    if codec == RAW:
        coded = rows.copy().view(np.uint8).reshape(rows.shape[0], 4 * rows.shape[1])
        rows[:] = 0
        return coded, 0
    return _code(codec, rows, True)


def decode_rows(codec: int, coded: np.ndarray, dim: int) -> np.ndarray:
    """Coded records ``(n, row_bytes)`` back to float32 rows ``(n, dim)`` (for ``none`` a
    view)."""
    coded = np.ascontiguousarray(coded, dtype=np.uint8)
    n = coded.shape[0]
    if codec == RAW:
        return coded.view(np.float32).reshape(n, dim)
    if codec == FP16:
        out = np.empty((n, dim), dtype=np.float32)
        half_decode(coded.view(np.uint16).reshape(n, dim), out)
        return out
    if codec == BF16:
        bits = coded.view(np.uint16).reshape(n, dim).astype(np.uint32) << np.uint32(16)
        return bits.view(np.float32)
    if codec == INT8:
        out = np.empty((n, dim), dtype=np.float32)
        int8_decode(coded, out)
        return out
    raise ProtocolError(f"unknown codec {codec}")


def round_trip(codec: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The coded records of ``rows`` and what a server decodes from them."""
    coded = encode_rows(codec, rows)
    return coded, decode_rows(codec, coded, rows.shape[1])


# ---- keys ----------------------------------------------------------------------------------
def encode_keys(offsets: np.ndarray) -> np.ndarray:
    """Strictly increasing offsets as varint bytes (``kernels.varint``)."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    out = np.empty(10 * offsets.size, dtype=np.uint8)
    n = varint_encode(offsets, out)
    if n < 0:
        raise ValueError("push offsets must be strictly increasing")
    return out[:n]


def decode_keys(buf: np.ndarray, count: int, where: str) -> np.ndarray:
    """``count`` offsets from varint bytes ``buf`` that must be used exactly; anything
    else is a ``ProtocolError`` naming ``where``."""
    out = np.empty(count, dtype=np.int64)
    used = varint_decode(buf, out)
    if used != buf.size:
        raise ProtocolError(f"{where}: {buf.size} key bytes do not hold {count} increasing "
                            f"offsets")
    return out
