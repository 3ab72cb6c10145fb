"""Rows of a prepared directory (the fast path): only the rows asked for are read, by
slicing the HDF5 datasets, a bounded block at a time; ids become table rows here, with
the table sizes of the training settings."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

import h5py
import numpy as np

from ..errors import DataError
from . import Batch, n_batches
from .hashing import PAD_ID, FieldHashing
from .shards import Manifest, read_manifest

BLOCK_ROWS = 1 << 16        # most rows read from a shard at once
CACHE_BYTES = 1 << 26       # HDF5 chunk cache per open shard


class ShardSource:
    """The rows of ``folder`` (see ``mpips.data.shards``), ``width`` slots wide (padding
    libSVM rows to a test set's width)."""

    bad_lines = 0

    def __init__(self, folder: str | Path, hashing: FieldHashing,
                 width: Optional[int] = None) -> None:
        self.folder = Path(folder)
        self.manifest: Manifest = read_manifest(self.folder)
        self.hashing = hashing
        self.fields = max(self.manifest.fields, width or 0)
        counts = [s["rows"] for s in self.manifest.shards]
        self._firsts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        for s in self.manifest.shards:
            with h5py.File(self.folder / s["file"], "r") as f:
                if f.attrs.get("run") != self.manifest.run or f.attrs.get("rows") != s["rows"]:
                    raise DataError(f"{self.folder / s['file']}: not the shard the manifest "
                                    f"lists; run 'mpips prep' again")

    @property
    def rows(self) -> int:
        return int(self._firsts[-1])

    def batches(self, start: int, stop: int, batch_size: int,
                order: Optional[Iterable[int]] = None) -> Iterator[Batch]:
        """Batches ``order`` (default: all, in turn) of rows [start, stop). Runs of
        consecutive batches are read together, up to ``BLOCK_ROWS`` rows at a time."""
        nb = n_batches(stop - start, batch_size)
        picks = list(range(nb)) if order is None else list(order)
        per_block = max(1, BLOCK_ROWS // batch_size)
        files: dict[int, h5py.File] = {}
        try:
            i = 0
            while i < len(picks):
                run = 1
                while (i + run < len(picks) and run < per_block
                       and picks[i + run] == picks[i] + run):
                    run += 1
                lo = start + picks[i] * batch_size
                hi = min(lo + run * batch_size, stop)
                ids, vals, labels = self._read(files, lo, hi)
                for a in range(0, hi - lo, batch_size):
                    b = slice(a, a + batch_size)
                    yield Batch(self.hashing.rows(ids[b]), vals[b], labels[b])
                i += run
        finally:
            for f in files.values():
                f.close()

    def _read(self, files: dict[int, h5py.File], lo: int, hi: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows [lo, hi) from the shards that hold them, widened to ``fields``."""
        n = hi - lo
        ids = np.full((n, self.fields), PAD_ID, dtype=np.uint64)
        vals = np.zeros((n, self.fields), dtype=np.float32)
        labels = np.empty(n, dtype=np.float32)
        w = self.manifest.fields
        s = int(np.searchsorted(self._firsts, lo, side="right")) - 1
        at = lo
        while at < hi:
            if s not in files:
                files[s] = h5py.File(self.folder / self.manifest.shards[s]["file"], "r",
                                     rdcc_nbytes=CACHE_BYTES)
            f, first = files[s], int(self._firsts[s])
            end = min(hi, int(self._firsts[s + 1]))
            a, b, o = at - first, end - first, at - lo
            if b == a:                       # an empty shard
                at, s = end, s + 1
                continue
            f["ids"].read_direct(ids, np.s_[a:b], np.s_[o:o + b - a, :w])
            f["vals"].read_direct(vals, np.s_[a:b], np.s_[o:o + b - a, :w])
            f["labels"].read_direct(labels, np.s_[a:b], np.s_[o:o + b - a])
            at, s = end, s + 1
        return ids, vals, labels
