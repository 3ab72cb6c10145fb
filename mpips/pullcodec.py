"""Pull codecs (``--pull-codec``): a table's rows as the coded records of its server's
mirror, and the rows a worker decodes from them. The value coders are the push codecs'
(``codecs``), rounding to nearest even: the same rows give the same records on any server,
so BSP stays bit-identical across repeats and server counts. Pure, no MPI.

A row not admitted yet holds a NaN (``models.NOT_ADMITTED``) that no coder keeps, so its
record is a mark that no coder writes for a finite row: for ``int8`` a scale byte of 127
(the coder's scales stop at 2**112), for ``fp16`` and ``bf16`` a first half 0x7FFF (a
NaN); a worker decodes a marked record as a row not admitted.
"""
from __future__ import annotations

import numpy as np

from .codecs import BF16, FP16, INT8, code_rows_at, decode_rows, row_bytes
from .errors import ProtocolError
from .models import NOT_ADMITTED

MARKS = {INT8: np.array([0x7F], np.uint8), FP16: np.array([0xFF, 0x7F], np.uint8),
         BF16: np.array([0xFF, 0x7F], np.uint8)}


def _mark(codec: int) -> np.ndarray:
    if codec not in MARKS:
        raise ProtocolError(f"no pull codec {codec}")
    return MARKS[codec]


def code_mirror(codec: int, table: np.ndarray, mirror: np.ndarray, index: np.ndarray
                ) -> None:
    """Code the rows ``index`` names of float32 ``table`` into the same rows of
    ``mirror`` (records, ``row_bytes`` uint8 a row), in place; rows not admitted become
    marks."""
    mark = _mark(codec)
    index = np.asarray(index, dtype=np.int64)
    marked = np.ascontiguousarray(table[index, 0]).view(np.uint32) == NOT_ADMITTED
    if marked.any():
        mirror[index[marked]] = 0
        mirror[index[marked], :mark.size] = mark
        index = index[~marked]
    code_rows_at(codec, table, mirror, index)


def code_pulled(codec: int, rows: np.ndarray) -> np.ndarray:
    """The mirror's records ``(n, row_bytes)`` of float32 ``rows``."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    out = np.empty((rows.shape[0], row_bytes(codec, rows.shape[1])), np.uint8)
    code_mirror(codec, rows, out, np.arange(rows.shape[0]))
    return out


def decode_pulled(codec: int, records: np.ndarray, dim: int) -> np.ndarray:
    """Float32 rows ``(n, dim)`` of the mirror's ``records``; a mark gives a row not
    admitted."""
    mark = _mark(codec)
    rows = decode_rows(codec, records, dim)
    marked = np.all(records[:, :mark.size] == mark, axis=1)
    if marked.any():
        rows.view(np.uint32)[marked] = NOT_ADMITTED
    return rows
