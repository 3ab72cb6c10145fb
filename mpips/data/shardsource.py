"""Rows of a prepared directory (the fast path): only the rows asked for are read, by
slicing the HDF5 datasets, a bounded block at a time; ids become table rows here, with
the table sizes of the training settings."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

import h5py
import numpy as np

from ..errors import DataError
from . import Batch, n_batches, pick_runs, shuffle_block
from .hashing import PAD_ID, FieldHashing
from .shards import Manifest, read_manifest

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
        """Batches ``order`` (default: all, in turn) of rows [start, stop). Consecutive
        picks that lie within one shuffle block of each other (a block of a shuffled
        epoch, or a run in order) are read together, then served in the order asked."""
        nb = n_batches(stop - start, batch_size)
        picks = range(nb) if order is None else order
        files: dict[int, h5py.File] = {}
        try:
            for run, first, last in pick_runs(picks, shuffle_block(batch_size)):
                lo = start + first * batch_size
                hi = min(start + (last + 1) * batch_size, stop)
                ids, vals, labels = self._read(files, lo, hi)
                for b in run:
                    rows = slice((b - first) * batch_size, (b - first + 1) * batch_size)
                    yield Batch(self.hashing.rows(ids[rows]), vals[rows], labels[rows])
        finally:
            for f in files.values():
                f.close()

    def _read(self, files: dict[int, h5py.File], lo: int, hi: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows [lo, hi) from the shards that hold them, widened to ``fields``."""
        n = hi - lo
        ids = np.empty((n, self.fields), dtype=np.uint64)
        ids[:, self.manifest.fields:] = PAD_ID        # widened to a test set's width
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
