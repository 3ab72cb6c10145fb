"""A server's part of a checkpoint, and agreeing on one to resume from.

A server writes its rows and optimiser state of every table in its local order, with the
partitions it owns, the partition map and its epoch, its table versions and staleness
counts. On resume a server reads back exactly the partitions the job's placement gives it,
from whichever old files hold them, so a checkpoint resumes onto other numbers of servers
and after any moves. The scheduler writes the manifest last and publishes the folder.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from mpi4py import MPI

from ..clocks import StalenessLog
from ..config import TrainConfig
from ..errors import CheckpointError, MpipsError
from ..models import TableSpec
from ..placement import Placement, reads_of
from ..ring import PartitionMap
from ..store import ShardStore
from ..wire import allgather_json, reduce_int
from . import manifest
from .layout import BEST, MANIFEST, best_partial, partial_dir, publish, publish_best, \
    server_file, write_json
from .shardfile import ServerFile, write_server_file
from .whole import held_layout, saved_layout


def server_arrays(store: ShardStore, log: StalenessLog) -> dict[str, np.ndarray]:
    """Everything a server saves: per table its rows, optimiser state and partition index;
    the partition map and its epoch, the tables' versions and the staleness histograms."""
    placement = store.placement
    out = {"owner": placement.pmap.owner, "epoch": np.array([placement.epoch], np.int64),
           "versions": store.versions.copy(), "staleness": log.hist}
    mine = np.flatnonzero(placement.pmap.owner == store.me)
    for i, name in enumerate(store.names):
        out[f"tables/{name}/rows"] = store.rows(i)
        for slot, arr in store.state_rows(i).items():
            out[f"tables/{name}/{slot}"] = arr
        if store.record_rows(i) is not None:      # admission counts and last steps
            out[f"tables/{name}/record"] = store.record_rows(i)
        out[f"tables/{name}/partitions"] = mine.astype(np.int32)
        out[f"tables/{name}/partition_start"] = placement.layouts[i].base[mine]
    return out


def write_server_checkpoint(store: ShardStore, log: StalenessLog, run_dir: Path, step: int,
                            final: bool, best: bool = False) -> dict:
    """Write this server's file of the checkpoint after ``step`` steps into the folder
    being assembled (``best``: of the best parameters, early stopping); returns the
    record for the scheduler's manifest."""
    folder = best_partial(run_dir) if best else partial_dir(run_dir, step)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    name = server_file(store.me)
    try:
        entry = write_server_file(folder / name, server_arrays(store, log),
                                  {"server": store.me, "step": step})
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot write the checkpoint ({exc})") from None
    return {"index": store.me, "file": name, **entry, "step": step, "final": final,
            "write_seconds": time.perf_counter() - started}


def publish_checkpoint(cfg: TrainConfig, specs: Sequence[TableSpec], slots: Sequence[str],
                       ring: dict, servers: Sequence[dict], workers: Sequence[dict],
                       step: int, final: bool, seconds: float,
                       extra: Optional[dict] = None, best: bool = False) -> Path:
    """The scheduler's part: the manifest last, then the folder renamed into place
    (``best``: the folder the servers wrote is the run's ``best``)."""
    entries = [{k: v for k, v in s.items() if k not in ("step", "final", "kind")}
               for s in servers]
    doc = manifest.build(step, final, cfg, specs, slots, ring, entries, workers, seconds,
                         extra)
    partial = best_partial(cfg.run_dir) if best else partial_dir(cfg.run_dir, step)
    files = {MANIFEST, *(s["file"] for s in entries),
             *(w["residuals"]["file"] for w in workers if "residuals" in w)}
    try:
        write_json(partial / MANIFEST, doc)
        if best:
            return publish_best(cfg.run_dir, partial, files)
        return publish(cfg.run_dir, partial, step, cfg.checkpoint_keep, files)
    except OSError as exc:
        raise CheckpointError(f"{partial}: cannot publish the checkpoint ({exc})") from None


def link_best(cfg: TrainConfig, step_dir: Path, extra: dict) -> Path:
    """A published checkpoint is also the run's best: its files linked into ``best``,
    with a manifest that carries the early-stopping history as it is now."""
    doc = dict(manifest.load(step_dir), **extra)
    files = {MANIFEST, *(s["file"] for s in doc["servers"]),
             *(w["residuals"]["file"] for w in doc["workers"] if "residuals" in w)}
    try:
        return publish_best(cfg.run_dir, step_dir, files, doc)
    except OSError as exc:
        raise CheckpointError(f"{cfg.run_dir / BEST}: cannot publish the best checkpoint "
                              f"({exc})") from None


def saved_map(doc: dict, step_dir: Path) -> tuple[PartitionMap, int]:
    """The partition map a checkpoint was written with, and its epoch (0 for checkpoints
    written before placements had epochs)."""
    entries = doc["servers"]
    with ServerFile(step_dir / server_file(0), entries[0]) as f:
        owner = f.read("owner")
        epoch = int(f.read("epoch")[0]) if "epoch" in entries[0]["datasets"] else 0
    return PartitionMap(owner, len(entries)), epoch


def resume_placement(doc: dict, step_dir: Path, specs: Sequence[TableSpec], n_servers: int,
                     standby: int, headroom: float) -> Placement:
    """Where a resumed job's partitions live: the checkpoint's own map and epoch when the
    servers are the same (so balancing carries on where it was); else the ring over the
    active servers, at the next epoch."""
    pmap, epoch = saved_map(doc, step_dir)
    same = doc["ring"]["servers"] == n_servers and doc["ring"].get("standby", 0) == standby
    if same:
        return Placement.of_map(specs, pmap, epoch, headroom)
    fresh = Placement.start(specs, n_servers, n_servers - standby, headroom)
    return Placement.of_map(specs, fresh.pmap, epoch + 1, headroom)


class CheckpointFiles:
    """The server files of one checkpoint (manifest ``doc``, folder ``step_dir``), each
    opened, checked against the manifest, when first read."""

    def __init__(self, doc: dict, step_dir: Path) -> None:
        self.entries, self.step_dir = doc["servers"], step_dir
        self._open: dict[int, ServerFile] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, s: int) -> ServerFile:
        if s not in self._open:
            self._open[s] = ServerFile(self.step_dir / server_file(s), self.entries[s])
        return self._open[s]

    def __enter__(self) -> "CheckpointFiles":
        return self

    def __exit__(self, *_: object) -> None:
        for f in self._open.values():
            f.close()


def _table_arrays(store: ShardStore, i: int) -> list[tuple[str, np.ndarray]]:
    """Table ``i``'s arrays on this server, by the name they are saved under."""
    record = store.record_rows(i)
    return [("rows", store.rows(i)), *store.state_rows(i).items(),
            *([("record", record)] if record is not None else [])]


def read_partitions(store: ShardStore, files: CheckpointFiles,
                    only: Optional[np.ndarray] = None) -> int:
    """Fill the partitions this server owns now (``only``: of those alone) with their
    rows, optimiser state and records from the checkpoint's files, whichever hold them.
    Returns the rows that came from a file of another server."""
    old = PartitionMap(files[0].read("owner"), len(files))
    if old.partitions != store.placement.pmap.partitions:
        raise CheckpointError(f"{files.step_dir}: {old.partitions} partitions, this mpips "
                              f"uses {store.placement.pmap.partitions}")
    moved = 0
    for i, (name, layout) in enumerate(zip(store.names, store.placement.layouts)):
        before = saved_layout([files[s] for s in range(len(files))], name, layout.rows, old)
        arrays = _table_arrays(store, i)
        for s, runs in reads_of(before, layout, store.me, only).items():
            for what, out in arrays:
                files[s].read_runs(f"tables/{name}/{what}", runs.src, runs.dst,
                                   runs.length, out)
            moved += runs.rows if s != store.me else 0
    return moved


def restore_server(store: ShardStore, log: StalenessLog, doc: dict, step_dir: Path) -> int:
    """Fill this server's shards, optimiser state, versions and staleness from a checkpoint,
    reading only the partitions it owns now. Returns the rows that came from a file of
    another server (they changed server)."""
    with CheckpointFiles(doc, step_dir) as files:
        moved = read_partitions(store, files)
        if len(files) == store.roles.n_servers:      # each server its own counts
            store.set_versions(files[store.me].read("versions"))
            log.hist[:] = files[store.me].read("staleness")
        else:     # the busiest old shard's versions; all staleness counts on server 0
            store.set_versions(np.max([files[s].read("versions")
                                       for s in range(len(files))], axis=0))
            if store.me == 0:
                log.hist[:] = np.sum([files[s].read("staleness")
                                      for s in range(len(files))], axis=0)
    store.sync()
    return moved


def kept_arrays(store: ShardStore, log: StalenessLog) -> dict[str, np.ndarray]:
    """A copy of everything this server would save (``server_arrays``), and its index and
    the number of servers, kept in memory when ranks die, so that it goes on with its rows
    as they stand (``restore_live``)."""
    out = {k: np.array(v, copy=True) for k, v in server_arrays(store, log).items()}
    out["server"] = np.array([store.me, store.roles.n_servers], np.int64)
    return out


def restore_live(store: ShardStore, log: StalenessLog, kept: dict[str, np.ndarray],
                 reload: np.ndarray, checkpoint: Optional[tuple[dict, Path]]) -> int:
    """Fill this server's shards after ranks died, under the placement the survivors go
    on with: the partitions it held, from its ``kept_arrays`` (rows, optimiser state,
    records as they stood, wherever the new layout puts them), and those of ``reload``
    (a dead server's) that it takes, from the ``checkpoint`` (manifest, folder); its own
    versions and staleness counts. Returns the rows read from the checkpoint."""
    me, n_before = (int(v) for v in kept["server"])
    before = PartitionMap(kept["owner"], n_before)
    for i, (name, layout) in enumerate(zip(store.names, store.placement.layouts)):
        held = held_layout(layout.rows, layout.salt, before, {me: (
            kept[f"tables/{name}/partitions"].astype(np.int64),
            kept[f"tables/{name}/partition_start"], kept[f"tables/{name}/rows"].shape[0])})
        runs = reads_of(held, layout, store.me).get(me)
        for what, out in _table_arrays(store, i) if runs is not None else []:
            out[runs.dst_rows()] = kept[f"tables/{name}/{what}"][runs.src_rows()]
    rows = 0
    if checkpoint is not None and reload.size:
        with CheckpointFiles(*checkpoint) as files:
            rows = read_partitions(store, files, reload)
    store.set_versions(kept["versions"])
    log.hist[:] = kept["staleness"]
    store.sync()
    return rows


def agree_restore(world: MPI.Intracomm, candidates: Sequence[Path], cfg: TrainConfig,
                  load: Optional[Callable[[dict, Path], int]] = None
                  ) -> tuple[dict, Path, int]:
    """Collective over ``world``: try the checkpoints in order until every rank could use
    one; a damaged one is skipped with a warning naming the bad file. ``load`` (servers)
    restores a candidate and returns the rows it moved. Returns (manifest, folder, rows
    moved summed over the servers)."""
    for path in candidates:
        error, moved = None, 0
        try:
            doc = manifest.load(path)
            manifest.check_settings(doc, cfg, str(path))
            if load is not None:
                moved = load(doc, path)
        except MpipsError as exc:
            error = str(exc)
        errors = allgather_json(world, error)
        bad = [e for e in errors if e is not None]
        if not bad:
            return doc, path, reduce_int(world, moved)
        if world.Get_rank() == 0:
            print(f"mpips: warning: checkpoint {path} is unusable: {bad[0]}; trying an "
                  f"older one", file=sys.stderr, flush=True)
    raise CheckpointError(f"no usable checkpoint among {', '.join(map(str, candidates))}")
