"""Checkpoints over MPI: who stops when, who writes what, and restoring shards.

A checkpoint is taken at a step boundary. Every worker that is still training stops there
(``clocks.stops_at``), waits until its pushes are applied, sends each server a marker and
the scheduler its position. A server that has the markers of every worker it still
serves writes its file and reports to the scheduler, which writes the manifest, publishes
the checkpoint and tells everyone to go on (or to stop: the job was asked to end).
When training ends, the servers write a final checkpoint the same way without markers.
Messages here are small JSON documents (``wire``): reading them cannot run code.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from mpi4py import MPI

from ..board import ClockBoard
from ..clocks import REQUESTED, StalenessLog
from ..config import TrainConfig
from ..errors import CheckpointError, MpipsError
from ..models import TableSpec
from ..ring import PARTITIONS, VNODES, PartitionMap
from ..tables import Tables
from ..topology import Roles
from ..waiting import wait_all
from ..wire import allgather_json, poll_json, reduce_int, send_json
from . import manifest
from .layout import MANIFEST, partial_dir, publish, server_file, write_json
from .moves import plan_reads
from .shardfile import ServerFile, write_server_file

TAG_RECORD, TAG_REPLY = 31, 32


def wait_reply(comm: MPI.Comm) -> bool:
    """The scheduler's answer to a checkpoint record: True if the job is to stop."""
    buf = np.zeros(1, dtype=np.int64)
    wait_all([comm.Irecv(buf, 0, TAG_REPLY)])
    return bool(buf[0])


# ---- worker side -------------------------------------------------------------------------
def worker_checkpoint(roles: Roles, tables: Tables, step: int, record: dict) -> bool:
    """Stop for the checkpoint named ``step`` (this worker's pushes are all applied):
    mark it on every server, report ``record`` to the scheduler, wait for the verdict.
    Returns True if the job is to stop."""
    tables.mark(step)
    send_json(roles.ctl, record, 0, TAG_RECORD)
    return wait_reply(roles.ctl)


# ---- server side -------------------------------------------------------------------------
def server_arrays(tables: Tables, log: StalenessLog) -> dict[str, np.ndarray]:
    """Everything a server saves: per table its rows, optimiser state and partition index;
    the partition map, the tables' versions and the staleness histograms."""
    out = {"owner": tables.pmap.owner, "versions": tables.versions.copy(),
           "staleness": log.hist}
    for name, t in tables.tables.items():
        out[f"tables/{name}/rows"] = t.shard
        for slot, arr in t.state.items():
            out[f"tables/{name}/{slot}"] = arr
        mine = np.flatnonzero(tables.pmap.owner == tables.roles.index)
        out[f"tables/{name}/partitions"] = mine.astype(np.int32)
        out[f"tables/{name}/partition_start"] = t.layout.base[mine]
    return out


def server_checkpoint(roles: Roles, tables: Tables, log: StalenessLog, run_dir: Path,
                      step: int, final: bool, marked: Sequence[int]) -> bool:
    """Write this server's file of the checkpoint after ``step`` steps and report it to
    the scheduler (``marked``: the workers that stopped for it). Returns True to stop."""
    folder = partial_dir(run_dir, step)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        entry = write_server_file(folder / server_file(roles.index), server_arrays(tables, log),
                                  {"server": roles.index, "step": step})
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot write the checkpoint ({exc})") from None
    record = {"index": roles.index, "file": server_file(roles.index), **entry, "step": step,
              "final": final, "workers": sorted(marked),
              "write_seconds": time.perf_counter() - started}
    send_json(roles.world, record, 0, TAG_RECORD)
    return wait_reply(roles.world)


# ---- scheduler side ----------------------------------------------------------------------
class Coordinator:
    """The scheduler's part: ask for checkpoints (on a timer or a signal), collect the
    records, write the manifest last, publish, and answer everyone."""

    def __init__(self, cfg: TrainConfig, roles: Roles, board: ClockBoard,
                 specs: Sequence[TableSpec], slots: Sequence[str],
                 stop_requested: Callable[[], bool], seconds_before: float = 0.0,
                 verbose: bool = True, balanced: bool = False) -> None:
        """``stop_requested()`` tells whether the job was asked to stop (a signal);
        ``balanced`` workers share a pool of batches, whose counters the manifest keeps."""
        self.cfg, self.roles, self.board, self.verbose = cfg, roles, board, verbose
        self.balanced = balanced
        self.specs, self.slots = list(specs), list(slots)
        self.stop_requested, self.seconds_before = stop_requested, seconds_before
        self.servers: dict[int, dict] = {}
        self.workers: dict[int, dict] = {}
        self.last_request = time.perf_counter()
        self.signalled = False     # the stop signal has been seen
        self.stop = False          # the job was asked to end after the next checkpoint
        self.stopped = False       # ... and has: the workers will not finish
        self.written: list[Path] = []
        self.final_written = False
        self.saved_samples = 0     # samples trained when the latest checkpoint was taken

    def request(self, stop: bool = False) -> None:
        """Ask the workers for a checkpoint at their next possible step."""
        self.stop = self.stop or stop
        self.board.swap(0, REQUESTED)
        self.last_request = time.perf_counter()

    def tick(self, progress_start: Optional[float]) -> None:
        """The stop signal asks for a checkpoint and a stop (ignored, with a warning, in a
        job that writes no checkpoints); the timer, every ``--checkpoint-seconds``, for a
        checkpoint."""
        if self.stop_requested() and not self.signalled:
            self.signalled = True
            if self.cfg.checkpointing:
                self.request(stop=True)
            else:
                print("mpips: warning: stop signal ignored: this job writes no checkpoints "
                      "(--checkpoint-every or --checkpoint-seconds)", file=sys.stderr,
                      flush=True)
            return
        every = self.cfg.checkpoint_seconds
        if every > 0 and progress_start is not None \
                and time.perf_counter() - self.last_request >= every:
            self.request()

    def poll(self, finished: Callable[[int], Optional[dict]], elapsed: float) -> bool:
        """Take one record if any has arrived; complete the checkpoint when all are in.
        ``finished(w)`` is worker ``w``'s final entry if it has finished, else None."""
        got = poll_json(self.roles.world, TAG_RECORD)
        if got is not None:
            self.servers[got[0] - 1] = got[1]
        elif (got := poll_json(self.roles.ctl, TAG_RECORD)) is not None:
            self.workers[got[0] - 1] = got[1]
        if len(self.servers) == self.roles.n_servers:
            marked = self.servers[0]["workers"]
            ended = {w: finished(w) for w in range(self.roles.n_workers) if w not in marked}
            if all(w in self.workers for w in marked) and None not in ended.values():
                self._complete(list(self.workers.values()) + list(ended.values()), elapsed)
        return got is not None

    def _complete(self, workers: list[dict], elapsed: float) -> None:
        first = self.servers[0]
        step, final = int(first["step"]), bool(first["final"])
        ring = {"servers": self.roles.n_servers, "partitions": PARTITIONS, "vnodes": VNODES}
        servers = [{k: v for k, v in s.items() if k not in ("step", "final", "workers")}
                   for s in self.servers.values()]
        seconds = self.seconds_before + elapsed
        if self.balanced:                    # every worker has stopped taking batches
            counters = self.board.counters()
            workers = [dict(w, pool=int(counters[w["index"]])) for w in workers]
        doc = manifest.build(step, final, self.cfg, self.specs, self.slots, ring, servers,
                             workers, seconds)
        partial = partial_dir(self.cfg.run_dir, step)
        try:
            write_json(partial / MANIFEST, doc)
            path = publish(self.cfg.run_dir, partial, step, self.cfg.checkpoint_keep,
                           {MANIFEST, *(s["file"] for s in servers)})
        except OSError as exc:
            raise CheckpointError(f"{partial}: cannot publish the checkpoint ({exc})") \
                from None
        self.written.append(path)
        self.final_written = final
        self.saved_samples = sum(int(w["samples"]) for w in workers)
        self.board.swap(self.board.control(), 0)
        stop = self.stop and not final
        self.stopped = stop
        replies = [np.array([stop], dtype=np.int64)]
        reqs = [self.roles.world.Isend(replies[0], s + 1, TAG_REPLY)
                for s in range(self.roles.n_servers)]
        reqs += [self.roles.ctl.Isend(replies[0], w + 1, TAG_REPLY) for w in self.workers]
        wait_all(reqs)
        if self.verbose:
            size = sum(s["bytes"] for s in servers)
            slowest = max(s["write_seconds"] for s in self.servers.values())
            print(f"[mpips] checkpoint {path}: step {step}, {size / 2**20:,.1f} MiB "
                  f"({size / 2**20 / max(slowest, 1e-9):,.0f} MiB/s)"
                  + (", stopping" if stop else ""), flush=True)
        self.servers, self.workers = {}, {}
        self.last_request = time.perf_counter()


# ---- restore -----------------------------------------------------------------------------
def restore_server(tables: Tables, log: StalenessLog, doc: dict, step_dir: Path) -> int:
    """Fill this server's shards, optimiser state, versions and staleness from a checkpoint,
    reading only the partitions it owns now. Returns the rows that came from a file of
    another server (they changed server)."""
    me = tables.roles.index
    entries = doc["servers"]
    files: dict[int, ServerFile] = {}

    def file(s: int) -> ServerFile:
        if s not in files:
            files[s] = ServerFile(step_dir / server_file(s), entries[s])
        return files[s]

    try:
        old = PartitionMap(file(0).read("owner"), len(entries))
        if old.partitions != tables.pmap.partitions:
            raise CheckpointError(f"{step_dir}: {old.partitions} partitions, this mpips "
                                  f"uses {tables.pmap.partitions}")
        moved = 0
        for name, t in tables.tables.items():
            for s, runs in plan_reads(t.spec.rows, t.layout.salt, old, tables.pmap,
                                      me).items():
                for what, out in (("rows", t.shard), *t.state.items()):
                    file(s).read_runs(f"tables/{name}/{what}", runs.src, runs.dst,
                                      runs.length, out)
                moved += runs.rows if s != me else 0
        if len(entries) == tables.roles.n_servers:      # each server its own counts
            tables.set_versions(file(me).read("versions"))
            log.hist[:] = file(me).read("staleness")
        else:     # the busiest old shard's versions; all staleness counts on server 0
            old_servers = range(len(entries))
            tables.set_versions(np.max([file(s).read("versions") for s in old_servers],
                                       axis=0))
            if me == 0:
                log.hist[:] = np.sum([file(s).read("staleness") for s in old_servers], axis=0)
    finally:
        for f in files.values():
            f.close()
    for t in tables.tables.values():
        t.win.Sync()
    return moved


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


class Saver:
    """A server's side of checkpoints: collect the workers' markers, write when every
    worker it still serves has stopped, and write the final checkpoint."""

    def __init__(self, roles: Roles, tables: Tables, log: StalenessLog, run_dir: Path) -> None:
        self.roles, self.tables, self.log, self.run_dir = roles, tables, log, run_dir
        self.marks: dict[int, int] = {}       # worker -> the checkpoint step it named

    def mark(self, worker: int, step: int, active: Sequence[int]) -> Optional[bool]:
        """A worker's marker. When every worker in ``active`` has stopped, write and wait
        for the verdict: True to stop, False to go on; None while others are still due."""
        self.marks[worker] = step
        return self.check(active)

    def check(self, active: Sequence[int]) -> Optional[bool]:
        """Write if every worker in ``active`` has stopped (called again when a worker's
        last push shrinks ``active``)."""
        if not self.marks or not set(active) <= set(self.marks):
            return None
        step = max(self.marks.values())
        marked = sorted(self.marks)
        self.marks = {}
        return server_checkpoint(self.roles, self.tables, self.log, self.run_dir, step,
                                 False, marked)

    def final(self, step: int) -> None:
        """The checkpoint after training: every worker has finished."""
        server_checkpoint(self.roles, self.tables, self.log, self.run_dir, step, True, [])
