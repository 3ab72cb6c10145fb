"""A worker's part of a checkpoint: its error-feedback residuals (``residuals``), one HDF5
file per worker (``worker-I.h5``, block CRC32s as in server files), so that a resumed job
sends exactly what the uninterrupted one would have. No MPI.

Per table ``tables/NAME/keys`` (int64, ascending), ``rows`` (float32) and ``ages`` (the
step each residual was last written; 0 from a store that keeps none, ``DirectRows``).
The worker's manifest entry names the file and its checksums (``residuals``). Residuals
are pending gradients, so any worker may carry any key's: resumed with another number of
workers, old worker ``j``'s go to new worker ``j % W`` (summed where keys meet).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import CheckpointError
from ..keyrows import ResidualStore
from .layout import partial_dir
from .shardfile import ServerFile, write_server_file

FORMAT = "mpips-worker-residuals"
Saved = tuple[np.ndarray, np.ndarray, np.ndarray]      # one table's keys, rows and ages


def worker_file(index: int) -> str:
    return f"worker-{index:04d}.h5"


def write_residuals(run_dir: Path, step: int, index: int, names: Sequence[str],
                    stores: Sequence[Optional[ResidualStore]]) -> dict:
    """Write worker ``index``'s residuals into the checkpoint of ``step`` being assembled;
    returns its manifest entry (``{"file", "bytes", "datasets"}``)."""
    folder = partial_dir(run_dir, step)
    arrays = {}
    for name, store in zip(names, stores):
        if store is not None:
            keys, rows, ages = store.arrays()
            arrays.update({f"tables/{name}/keys": keys, f"tables/{name}/rows": rows,
                           f"tables/{name}/ages": ages})
    try:
        folder.mkdir(parents=True, exist_ok=True)
        entry = write_server_file(folder / worker_file(index), arrays,
                                  {"format": FORMAT, "worker": index, "step": step})
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot write the checkpoint ({exc})") from None
    return {"file": worker_file(index), **entry}


def _read_table(f: ServerFile, name: str) -> Optional[tuple[np.ndarray, ...]]:
    if f"tables/{name}/keys" not in f.entry["datasets"]:
        return None
    out = []
    for what in ("keys", "rows", "ages"):
        meta = f.entry["datasets"][f"tables/{name}/{what}"]
        out.append(f.read(f"tables/{name}/{what}") if meta["shape"][0] else
                   np.empty(meta["shape"], np.dtype(meta["dtype"])))
    return tuple(out)


def read_residuals(doc: dict, step_dir: Path, index: int, n_workers: int,
                   names: Sequence[str], dims: Sequence[int], table_rows: Sequence[int]
                   ) -> list[Optional[Saved]]:
    """Worker ``index``'s residuals from a checkpoint (of any number of workers): per
    table its keys (ascending, each below the table's rows), rows and ages, or None where
    no old worker kept residuals of it."""
    sums: list[dict[int, Saved]] = [{} for _ in names]
    for w in doc["workers"]:
        entry = w.get("residuals")
        if entry is None or int(w["index"]) % n_workers != index:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise CheckpointError(f"{step_dir}: worker {w['index']}'s residual entry is "
                                  f"malformed")
        with ServerFile(step_dir / entry["file"], entry) as f:
            for i, name in enumerate(names):
                got = _read_table(f, name)
                if got is not None:
                    sums[i][int(w["index"])] = got
    out: list[Optional[Saved]] = []
    for i, (dim, found) in enumerate(zip(dims, sums)):
        if not found:
            out.append(None)
            continue
        keys = np.concatenate([k for k, _, _ in found.values()])
        rows = np.concatenate([r for _, r, _ in found.values()]).astype(np.float32)
        ages = np.concatenate([a for _, _, a in found.values()])
        if rows.shape[1:] != (dim,):
            raise CheckpointError(f"{step_dir}: residuals of table {names[i]!r} have rows of "
                                  f"{rows.shape[1:]}, the table {dim}")
        uniq, inverse = np.unique(keys, return_inverse=True)
        if uniq.size and not 0 <= uniq[0] <= uniq[-1] < table_rows[i]:
            raise CheckpointError(f"{step_dir}: residuals of table {names[i]!r} name keys "
                                  f"outside its {table_rows[i]} rows")
        summed = np.zeros((uniq.size, dim), np.float32)
        np.add.at(summed, inverse, rows)        # in old-worker order: deterministic
        latest = np.zeros(uniq.size, np.int64)
        np.maximum.at(latest, inverse, ages)
        out.append((uniq, summed, latest))
    return out
