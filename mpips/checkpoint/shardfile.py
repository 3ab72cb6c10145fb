"""One server's checkpoint file: HDF5 arrays, each with per-block CRC32 checksums. No MPI.

Datasets are stored contiguously (as fast to write as a plain file) and cut into blocks of
about ``BLOCK_BYTES``; the file holds every block's CRC32 under ``crc/<name>``, and the
manifest holds the CRC32 of that list. A reader verifies every block it reads, so a partial
read (a server taking over some partitions) is as safe as a full one, and a truncated or
bit-flipped file fails with an error naming it.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from ..errors import CheckpointError
from ..durable import commit, tmp_name

BLOCK_BYTES = 1 << 20
READ_BYTES = 64 << 20          # largest read at a time, to bound the temporary memory
FORMAT = "mpips-server-shard"


def row_bytes(arr_shape: tuple[int, ...], itemsize: int) -> int:
    """Bytes of one row (first-axis entry), at least 1."""
    return max(1, itemsize * int(np.prod(arr_shape[1:], dtype=np.int64)))


def block_rows(arr_shape: tuple[int, ...], itemsize: int) -> int:
    """Rows (first-axis entries) per checksummed block."""
    return max(1, BLOCK_BYTES // row_bytes(arr_shape, itemsize))


def block_crcs(arr: np.ndarray, rows_per_block: int) -> np.ndarray:
    """CRC32 of each block of ``rows_per_block`` rows."""
    n = arr.shape[0]
    return np.array([zlib.crc32(np.ascontiguousarray(arr[lo:lo + rows_per_block]).data)
                     for lo in range(0, n, rows_per_block)], dtype=np.uint32)


def dataset_entry(arr: np.ndarray) -> tuple[np.ndarray, dict]:
    """An array's block checksums, and its entry in a manifest: shape, dtype, block size
    and the CRC32 of the block checksums."""
    rows = block_rows(arr.shape, arr.dtype.itemsize)
    crcs = block_crcs(arr, rows)
    return crcs, {"shape": list(arr.shape), "dtype": arr.dtype.str, "block_rows": rows,
                  "blocks_crc32": zlib.crc32(crcs.data)}


def write_server_file(path: Path, arrays: Mapping[str, np.ndarray],
                      attrs: Mapping[str, int | str]) -> dict:
    """Write ``arrays`` (name -> array) to ``path`` atomically: a temporary name, fsync,
    rename. Returns the manifest's entry for the file: its size and, per dataset, its
    ``dataset_entry``. ``attrs`` are the file's attributes (``format`` may be replaced)."""
    tmp = tmp_name(path)
    entries = {}
    with h5py.File(tmp, "w", libver="latest") as f:
        f.attrs["format"] = FORMAT
        for key, value in attrs.items():
            f.attrs[key] = value
        for name, arr in arrays.items():
            crcs, entries[name] = dataset_entry(arr)
            f.create_dataset(name, data=arr)
            f.create_dataset(f"crc/{name}", data=crcs)
    commit(path)
    return {"bytes": path.stat().st_size, "datasets": entries}


class ServerFile:
    """A server file opened for checked reads against its manifest ``entry``."""

    def __init__(self, path: Path, entry: Mapping) -> None:
        self.path, self.entry = path, entry
        try:
            size = path.stat().st_size
        except OSError:
            raise CheckpointError(f"{path}: missing") from None
        if size != entry["bytes"]:
            raise CheckpointError(f"{path}: {size:,} bytes, the manifest says "
                                  f"{entry['bytes']:,} (truncated or replaced)")
        try:
            self.h5 = h5py.File(path, "r")
        except OSError as exc:
            raise CheckpointError(f"{path}: not a readable HDF5 file ({exc})") from None
        self._checked: dict[str, tuple[h5py.Dataset, np.ndarray, int]] = {}

    def close(self) -> None:
        self.h5.close()

    def __enter__(self) -> "ServerFile":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _dataset(self, name: str) -> tuple[h5py.Dataset, np.ndarray, int]:
        """The dataset, its verified block checksums and rows per block (checked once)."""
        if name not in self._checked:
            self._checked[name] = self._check(name)
        return self._checked[name]

    def _check(self, name: str) -> tuple[h5py.Dataset, np.ndarray, int]:
        meta = self.entry["datasets"].get(name)
        if meta is None:
            raise CheckpointError(f"{self.path}: the manifest lists no dataset {name!r}")
        try:
            ds, crcs = self.h5[name], self.h5[f"crc/{name}"][()]
        except (KeyError, OSError) as exc:
            raise CheckpointError(f"{self.path}: dataset {name!r} unreadable ({exc})") from None
        if list(ds.shape) != meta["shape"] or ds.dtype.str != meta["dtype"] \
                or zlib.crc32(np.ascontiguousarray(crcs, np.uint32).data) != meta["blocks_crc32"]:
            raise CheckpointError(f"{self.path}: dataset {name!r} does not match the "
                                  f"manifest (damaged file)")
        return ds, crcs, int(meta["block_rows"])

    def read(self, name: str) -> np.ndarray:
        """A whole (small) dataset, verified."""
        meta = self.entry["datasets"].get(name)
        if meta is None:
            raise CheckpointError(f"{self.path}: the manifest lists no dataset {name!r}")
        out = np.empty(meta["shape"], np.dtype(meta["dtype"]))
        self.read_runs(name, np.array([0]), np.array([0]), np.array([out.shape[0]]), out)
        return out

    def verify(self, name: str) -> int:
        """Read and check every block of a dataset, ``READ_BYTES`` at a time (memory stays
        bounded whatever its size); returns the bytes checked."""
        ds, _, per_block = self._dataset(name)
        chunk = per_block * max(1, READ_BYTES // (per_block * row_bytes(ds.shape,
                                                                        ds.dtype.itemsize)))
        buf = np.empty((min(chunk, ds.shape[0]), *ds.shape[1:]), ds.dtype)
        return sum(self.read_runs(name, np.array([lo]), np.array([0]),
                                  np.array([min(chunk, ds.shape[0] - lo)]), buf)
                   for lo in range(0, ds.shape[0], chunk))

    def read_runs(self, name: str, src: np.ndarray, dst: np.ndarray, length: np.ndarray,
                  out: np.ndarray) -> int:
        """Copy rows ``src[i]:src[i]+length[i]`` of dataset ``name`` to
        ``out[dst[i]:dst[i]+length[i]]``, reading (and verifying) only the blocks these
        runs touch. Returns the bytes read from the file."""
        ds, crcs, per_block = self._dataset(name)
        keep = length > 0
        src, dst, length = src[keep], dst[keep], length[keep]
        if src.size == 0:
            return 0
        needed = np.zeros(crcs.size + 1, dtype=np.int64)
        np.add.at(needed, src // per_block, 1)
        np.add.at(needed, (src + length - 1) // per_block + 1, -1)
        blocks = np.flatnonzero(np.cumsum(needed)[:-1] > 0)
        row = row_bytes(ds.shape, ds.dtype.itemsize)
        step = max(1, READ_BYTES // (per_block * row))
        # Read runs of consecutive needed blocks, at most ``step`` blocks at a time.
        breaks = np.flatnonzero(np.diff(blocks) != 1) + 1
        # Contiguous datasets are read straight from the file at their offset: as fast as
        # a plain file, and into ``out`` itself when one run covers the whole read.
        offset = ds.id.get_offset()
        read = 0
        for group in np.split(blocks, breaks):
            for i in range(0, group.size, step):
                b0, b1 = int(group[i]), int(group[min(i + step, group.size) - 1]) + 1
                lo, hi = b0 * per_block, min(b1 * per_block, ds.shape[0])
                whole = src.size == 1 and src[0] <= lo and hi <= src[0] + length[0]
                buf = out[lo + dst[0] - src[0]:hi + dst[0] - src[0]] if whole \
                    else np.empty((hi - lo, *ds.shape[1:]), ds.dtype)
                self._read(ds, offset, lo, hi, row, buf)
                got = block_crcs(buf, per_block)
                bad = np.flatnonzero(got != crcs[b0:b1])
                if bad.size:
                    raise CheckpointError(f"{self.path}: checksum mismatch in {name!r} "
                                          f"rows {lo + int(bad[0]) * per_block}.. (damaged "
                                          f"file)")
                read += buf.nbytes
                if not whole:
                    _copy_runs(buf, lo, hi, src, dst, length, out)
        return read

    def _read(self, ds: h5py.Dataset, offset: int | None, lo: int, hi: int, row: int,
              buf: np.ndarray) -> None:
        """Rows [lo, hi) of ``ds`` into the contiguous ``buf``."""
        try:
            if offset is None:
                ds.read_direct(buf, np.s_[lo:hi])
                return
            view = memoryview(buf).cast("B")
            with open(self.path, "rb", buffering=0) as fh:
                fh.seek(offset + lo * row)
                if fh.readinto(view) != view.nbytes:
                    raise OSError("short read")
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot read {ds.name!r} rows {lo}..{hi} "
                                  f"({exc})") from None


def _copy_runs(buf: np.ndarray, lo: int, hi: int, src: np.ndarray, dst: np.ndarray,
               length: np.ndarray, out: np.ndarray) -> None:
    """The parts of the runs that fall in rows [lo, hi) of the dataset, from ``buf``."""
    a = np.maximum(src, lo)
    b = np.minimum(src + length, hi)
    hit = b > a
    if not hit.any():
        return
    a, b, shift = a[hit], b[hit], (dst - src)[hit]
    if a.size == 1:
        out[a[0] + shift[0]:b[0] + shift[0]] = buf[a[0] - lo:b[0] - lo]
        return
    n = b - a
    starts = np.repeat(a - np.cumsum(n) + n, n)
    rows = np.arange(int(n.sum()), dtype=np.int64) + starts
    out[rows + np.repeat(shift, n)] = buf[rows - lo]
