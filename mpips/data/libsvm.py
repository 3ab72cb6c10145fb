"""libSVM / libFM (``label idx:val ...``) and libFFM (``label field:idx:val ...``).

Rows have no fixed fields, so a row's features fill ``width`` slots (the most features of
any line, found by counting ``:``) and unused slots are padded with ``PAD_ID`` and value 0,
which adds nothing to a logit or a gradient. A feature's id depends on its index (and its
libFFM field), never on its slot; values are kept as they are. Fields in messages count
from 1, the label being field 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .hashing import PAD_ID, hash_ids, salts
from .parse import BadLine, Parsed, parse_label


@dataclass
class _Block:
    labels: np.ndarray
    fields: np.ndarray     # uint64 libFFM field of each slot (0 for libSVM)
    index: np.ndarray      # uint64 feature index of each slot
    vals: np.ndarray
    used: np.ndarray       # slots in use per line


class LibSVMFormat:
    """``label idx:val ...`` with ``width`` slots; libFFM (``ffm``) adds a field."""

    padded = True
    header = False
    names: tuple[str, ...] = ()

    def __init__(self, width: int, ffm: bool = False) -> None:
        self.fields, self.ffm = max(width, 1), ffm
        self.name = "libffm" if ffm else "libsvm"
        self._parts = 3 if ffm else 2
        self._shape = "field:idx:val" if ffm else "idx:val"

    def start(self, n: int) -> _Block:
        w = self.fields
        return _Block(np.empty(n, np.float32), np.zeros((n, w), np.uint64),
                      np.zeros((n, w), np.uint64), np.zeros((n, w), np.float32),
                      np.zeros(n, np.int64))

    def line(self, block: _Block, i: int, text: str) -> None:
        tokens = text.split()
        if not tokens:
            raise BadLine("empty line")
        block.labels[i] = parse_label(tokens[0])
        for slot, token in enumerate(tokens[1:]):
            parts = token.split(":")
            try:
                if len(parts) != self._parts:
                    raise ValueError
                numbers = [int(p) for p in parts[:-1]]
                value = float(parts[-1])
                if min(numbers) < 0 or max(numbers) >= 2**64 or not math.isfinite(value):
                    raise ValueError
            except ValueError:
                raise BadLine(f"field {slot + 2} {token!r} is not {self._shape}") from None
            if slot >= self.fields:
                raise BadLine(f"{len(tokens) - 1} features, more than the {self.fields} "
                              f"slots counted when the file was opened")
            block.index[i, slot] = numbers[-1]
            block.fields[i, slot] = numbers[0] if self.ffm else 0
            block.vals[i, slot] = value
        block.used[i] = len(tokens) - 1

    def finish(self, block: _Block, seed: int) -> Parsed:
        used = np.arange(self.fields) < block.used[:, None]
        ids = np.where(used, hash_ids(block.index, salts(block.fields, seed)), PAD_ID)
        return Parsed(ids, block.vals, block.labels, used)
