"""Prepared data on disk: ``DIR/shard-NNNNN.h5`` (HDF5: ``ids`` uint64 and ``vals``
float32, both (rows, fields), ``labels`` float32) and ``DIR/manifest.json``.

Every file is written under a temporary name, flushed to disk and renamed into place;
the manifest comes last. A reader trusts only the shards the manifest lists, with the
manifest's run id, row count and size, so files a failed run left behind are never read.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np

from ..durable import atomic_write, commit, tmp_name
from ..errors import DataError
from .parse import Parsed

MANIFEST = "manifest.json"
VERSION = 1
CHUNK_ROWS = 8192          # rows per HDF5 chunk (see benchmarks/README.md)
# Datasets are not compressed: measured here, lzf or gzip made reading about 3 times
# slower for files 3 to 4 times smaller (benchmarks/README.md).


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


@dataclass
class Manifest:
    """What a prepared directory holds; rows are the shards' rows, concatenated in order."""

    run: str
    format: str
    fields: int
    names: list[str]
    padded: bool
    seed: int
    inputs: list[str]
    shards: list[dict[str, Any]]           # {"file", "rows", "bytes"}
    bad_lines: int = 0
    schema: Optional[dict[str, Any]] = None
    stats: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.shards)


def manifest_record(manifest: Manifest) -> dict[str, Any]:
    """The manifest as JSON values (what ``manifest.json`` holds)."""
    return asdict(manifest) | {"rows": manifest.rows}


def manifest_of(record: dict[str, Any]) -> Manifest:
    """The manifest from its JSON values (``rows`` is derived, so dropped)."""
    return Manifest(**{k: v for k, v in record.items() if k != "rows"})


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest atomically: after a crash there is the old one or none."""
    atomic_write(folder / MANIFEST,
                 (json.dumps(manifest_record(manifest), indent=1) + "\n").encode())


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a prepared directory, with its shards checked against it."""
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder}: no {MANIFEST}: not a directory written by 'mpips prep' "
                        f"(or the prep did not finish)")
    try:
        manifest = manifest_of(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{path}: not a valid manifest ({exc})") from None
    if manifest.version != VERSION:
        raise DataError(f"{path}: manifest version {manifest.version}, expected {VERSION}")
    for s in manifest.shards:
        shard = folder / s["file"]
        if not shard.is_file() or shard.stat().st_size != s["bytes"]:
            raise DataError(f"{shard}: missing or not the size {MANIFEST} records; "
                            f"run 'mpips prep' again")
    return manifest


class ShardWriter:
    """One shard, written under a temporary name; ``commit`` puts it in place."""

    def __init__(self, path: Path, fields: int, run: str) -> None:
        self.path = path
        self.file = h5py.File(tmp_name(path), "w")
        self.file.attrs["run"] = run
        for name, dtype, width in (("ids", np.uint64, (fields,)),
                                   ("vals", np.float32, (fields,)), ("labels", np.float32, ())):
            self.file.create_dataset(name, (0, *width), dtype, maxshape=(None, *width),
                                     chunks=(CHUNK_ROWS, *width))
        self.rows = 0

    def append(self, parsed: Parsed) -> None:
        n = len(parsed)
        for name, arr in (("ids", parsed.ids), ("vals", parsed.vals),
                          ("labels", parsed.labels)):
            ds = self.file[name]
            ds.resize(self.rows + n, axis=0)
            ds[self.rows:] = arr
        self.rows += n

    def commit(self) -> dict[str, Any]:
        """Flush, rename into place; the manifest's record of this shard."""
        self.file.attrs["rows"] = self.rows
        self.file.close()
        commit(self.path)
        return {"file": self.path.name, "rows": self.rows, "bytes": self.path.stat().st_size}


def clear(folder: Path) -> None:
    """Remove a previous prep's manifest first (so nothing is trusted while we write),
    then its shards and temporary files."""
    (folder / MANIFEST).unlink(missing_ok=True)
    for p in [*folder.glob("shard-*.h5"), *folder.glob(".shard-*.h5.tmp"),
              tmp_name(folder / MANIFEST)]:
        p.unlink(missing_ok=True)
