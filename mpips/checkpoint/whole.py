"""Whole tables out of a checkpoint, in key order, in one process. No MPI.

Each server file holds its shard in the server's local row order: the partitions the
stored partition map (``owner``) gives that server, back to back (``ring.TableLayout``).
A table is rebuilt by key from every server's file, a run of partitions at a time, so
the extra memory stays bounded whatever the table's size; every block read is verified
against the manifest (``ServerFile``). Optimiser state is not read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import CheckpointError
from ..ring import PartitionMap, TableLayout, name_salt
from .layout import server_file
from .shardfile import ServerFile


def read_tables(step_dir: Path, doc: dict, names: Iterable[str] | None = None
                ) -> dict[str, np.ndarray]:
    """Tables ``names`` (default: all in the manifest ``doc``) as float32 arrays
    (rows, dim), row ``k`` holding key ``k``."""
    specs = {t["name"]: t for t in doc["tables"]}
    wanted = list(specs) if names is None else list(names)
    missing = [n for n in wanted if n not in specs]
    if missing:
        raise CheckpointError(f"{step_dir}: the checkpoint has no table {missing[0]!r}")
    out = {n: np.empty((int(specs[n]["rows"]), int(specs[n]["dim"])), np.float32)
           for n in wanted}
    entries = doc["servers"]
    pmap = None
    for entry in entries:
        with ServerFile(step_dir / server_file(entry["index"]), entry) as f:
            if pmap is None:
                pmap = PartitionMap(f.read("owner"), len(entries))
            for name, table in out.items():
                _read_shard(f, name, TableLayout.build(table.shape[0], name_salt(name), pmap),
                            entry["index"], table)
    return out


def _read_shard(f: ServerFile, name: str, layout: TableLayout, server: int,
                table: np.ndarray) -> None:
    """Server ``server``'s rows of table ``name`` from its file into ``table``, by key."""
    what = f"tables/{name}/rows"
    shape = f.entry["datasets"].get(what, {}).get("shape")
    expected = [int(layout.shard_rows[server]), table.shape[1]]
    if shape != expected:
        raise CheckpointError(f"{f.path}: {what} has shape {shape}, the partition map "
                              f"gives this server {expected}")
    buf = np.empty((0, table.shape[1]), np.float32)
    for first, keys in layout.iter_keys(server):
        if buf.shape[0] < keys.size:
            buf = np.empty((keys.size, table.shape[1]), np.float32)
        f.read_runs(what, np.array([first]), np.array([0]), np.array([keys.size]), buf)
        table[keys] = buf[:keys.size]
