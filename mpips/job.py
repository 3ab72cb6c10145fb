"""One training job: split the ranks into roles, build the tables, run each role's loop."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from mpi4py import MPI

from .config import TrainConfig
from .data.plan import DataPlan, plan_data
from .data.schedule import worker_entries
from .errors import ConfigError
from .models import Model, build_model
from .optim import Optimizer
from .scheduler import run_scheduler
from .server import run_server
from .tables import Tables, shard_bytes
from .board import ClockBoard
from .checkpoint.layout import resume_candidates
from .checkpoint.manifest import check_setup, positions
from .checkpoint.moves import moved_fraction
from .checkpoint.protocol import Coordinator, agree_restore, restore_server
from .clocks import StalenessLog, Start, effective_sync, job_bound
from .ring import PartitionMap, name_salt
from .slurm import stop_requested
from .wire import bcast_json
from .reports import reduce_server_stats, send_evaluation
from .topology import SCHEDULER, SERVER, Roles, plan_roles, split_roles
from .waiting import wait_all
from .worker import Worker


@dataclass
class JobResult:
    """What this rank knows at the end: the scheduler the metrics, workers the parameters
    (when asked for), servers the number of pushes they applied."""

    role: str
    metrics: Optional[dict] = None
    params: dict[str, np.ndarray] = field(default_factory=dict)
    pushes: int = 0


def describe(cfg: TrainConfig, roles: Roles, train_rows: int, test_rows: int) -> str:
    """The scheduler's opening line: model, data, sizes and roles."""
    data = cfg.data or f"built-in synthetic data (seed {cfg.seed})"
    return (f"[mpips] {cfg.model} + {cfg.optimizer} (lr {cfg.lr}) on {data}: "
            f"{train_rows:,} train / {test_rows:,} test rows, {cfg.epochs} epoch(s), batch "
            f"{cfg.batch_size}/worker; 1 scheduler, {roles.n_servers} server(s), "
            f"{roles.n_workers} worker(s)" + batch_warning(cfg, train_rows, roles.n_workers))


def batch_warning(cfg: TrainConfig, train_rows: int, n_workers: int) -> str:
    """A note when workers have fewer rows than a batch: the steps are then smaller than
    ``batch-size``, and since a step's gradient is divided by ``batch-size x workers`` the
    effective learning rate is lower."""
    per_worker = train_rows // n_workers
    if per_worker >= cfg.batch_size:
        return ""
    return (f"\n[mpips] note: each worker has only about {per_worker:,} train rows, fewer "
            f"than --batch-size {cfg.batch_size}; steps are smaller and the effective "
            f"learning rate lower")


def model_of(cfg: TrainConfig, data: DataPlan) -> Model:
    """The model the settings ask for, over the planned data."""
    return build_model(cfg.model, data.table_rows, cfg.embedding_dim, cfg.init_std,
                       data.train.fields, cfg.hidden)


def check_memory(cfg: TrainConfig, model: Model, n_servers: int) -> None:
    """Refuse tables that cannot fit: a server's share against this machine's memory."""
    optimizer = Optimizer(cfg.optimizer)
    need = sum(shard_bytes(spec, int(1.1 * spec.rows / n_servers) + 1, optimizer)
               for spec in model.tables)
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise ConfigError(f"--table-rows {cfg.table_rows:,} needs about {need / 2**30:.1f} GiB "
                          f"per server, more than this node's {have / 2**30:.1f} GiB: lower "
                          f"--table-rows or raise --servers")


def prepare(cfg: TrainConfig, size: int, rank: int = 0) -> DataPlan:
    """Checks made before any communication: ranks, memory, output file (on the scheduler,
    who writes it) and data files. ``agree_on_setup`` makes every rank share the verdict."""
    n_servers, n_workers = plan_roles(size, cfg.servers)
    data = plan_data(cfg)
    model = model_of(cfg, data)
    check_memory(cfg, model, n_servers)
    names = [t.name for t in model.tables]
    for table, _, _ in cfg.tables:
        if table not in names:
            raise ConfigError(f"tables.{table}: the {cfg.model} model has no table {table!r} "
                              f"(its tables: {', '.join(names)})")
    slow = cfg.slow()
    if slow is not None and slow[0] >= n_workers:
        raise ConfigError(f"--slow-worker {cfg.slow_worker}: there are only {n_workers} "
                          f"workers (0..{n_workers - 1})")
    if cfg.balance == "on" and job_bound(cfg.sync_of(n) for n in names)[0]:
        raise ConfigError("--balance on: this job runs in BSP rounds, whose batches stay "
                          "fixed so that training is deterministic; balance needs --sync "
                          "ssp or async on every table")
    check_setup(cfg, n_workers, data.train_range)
    if cfg.checkpointing and rank == 0:
        try:
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--checkpoint-dir: cannot create {cfg.run_dir} ({exc})") \
                from None
    if cfg.metrics_out is not None and rank == 0:
        folder = Path(cfg.metrics_out).resolve().parent
        if not folder.is_dir():
            raise ConfigError(f"--metrics-out {cfg.metrics_out}: folder {folder} does not exist")
    return data


def train(cfg: TrainConfig, comm: MPI.Intracomm = MPI.COMM_WORLD,
          return_params: bool = False, data: Optional[DataPlan] = None,
          verbose: bool = True) -> JobResult:
    """Collective over ``comm``: train and evaluate; every rank returns its ``JobResult``.
    ``verbose`` False keeps the scheduler quiet (benchmarks run many jobs)."""
    data = data or prepare(cfg, comm.Get_size(), comm.Get_rank())
    roles = split_roles(comm, cfg.servers)
    model = model_of(cfg, data)
    result = JobResult(roles.role)
    names = [t.name for t in model.tables]
    policies = [cfg.sync_of(n) for n in names]
    rounds, bound = job_bound(policies)
    ssp = not rounds and bound is not None
    balanced = not rounds and cfg.balance != "off"
    # The board carries SSP clocks and checkpoint requests (a timer, or the stop signal).
    board = ClockBoard(roles.ctl, roles.n_workers) if roles.ctl is not None else None
    optimizer = Optimizer(cfg.optimizer, lr=cfg.lr, l2=cfg.l2, l1=cfg.l1)
    # Rank 0 lists the checkpoints, so that every rank tries the same ones in turn.
    candidates = [Path(p) for p in bcast_json(comm, [
        str(p) for p in resume_candidates(cfg.resume, cfg.run_dir)]
        if cfg.resume and comm.Get_rank() == 0 else [])]
    if roles.role == SCHEDULER:
        resumed = None
        if candidates:
            resumed, path, moved = agree_restore(comm, candidates, cfg)
            saved_workers = len(resumed["workers"])
            resumed["workers"] = worker_entries(resumed["workers"], cfg, data.train_range,
                                                roles.n_workers)
            minimum = moved_rows(resumed, model, roles.n_servers)
            if verbose:
                print(resume_line(resumed, path, moved, minimum, model, roles, saved_workers),
                      flush=True)
            resumed = dict(resumed, moved_rows=moved, moved_rows_minimum=minimum)
        if verbose:
            print(describe(cfg, roles, data.train_range[1] - data.train_range[0],
                           data.test_range[1] - data.test_range[0]), flush=True)
        coord = Coordinator(cfg, roles, board, model.tables, optimizer.state_slots,
                            stop_requested, resumed["seconds"] if resumed else 0.0, verbose,
                            balanced)
        result.metrics = run_scheduler(cfg, roles, board, names,
                                       dict(effective_sync(dict(zip(names, policies))),
                                            balance=balanced), coord,
                                       verbose, resumed)
        return finish(comm, roles, result)
    report = None
    with Tables(model.tables, roles, optimizer, pull=cfg.pull) as tables:
        resumed, start, log = None, None, None
        if candidates:
            load = None
            if roles.role == SERVER:
                log = StalenessLog(names)
                load = lambda doc, path: restore_server(tables, log, doc, path)  # noqa: E731
            resumed, _, _ = agree_restore(comm, candidates, cfg, load)
            resumed["workers"] = worker_entries(resumed["workers"], cfg, data.train_range,
                                                roles.n_workers)
            start = Start(tuple(positions(resumed)),
                          tuple(w["finished"] for w in resumed["workers"]))
        if roles.role == SERVER:
            report = run_server(roles, tables, policies, cfg.seed, start, log,
                                cfg.run_dir if cfg.checkpointing else None)
            result.pushes = report.applied
        else:
            worker = Worker(cfg, roles, tables, model, data, bound, board, ssp,
                            resumed["workers"][roles.index] if resumed else None, balanced)
            worker.warm_up()
            tables.ready()                     # the servers' shards are initialised
            stopped = worker.train()
            board.close()
            wait_all([roles.group.Ibarrier()])  # every worker's last step is applied
            worker.cache.free()
            if not stopped:
                send_evaluation(roles.ctl, worker.evaluate())
            if return_params:
                result.params = worker.pull_all()
    if report is None:
        reduce_server_stats(comm, names, bad_lines=data.bad_lines)
    else:
        reduce_server_stats(comm, names, report.staleness.hist, report.applied,
                            report.violations, (report.peak_rss, report.table_bytes))
    return finish(comm, roles, result)


def moved_rows(doc: dict, model: Model, n_servers: int) -> int:
    """Rows whose server differs between the checkpoint's ring and this job's: the fewest
    that must move."""
    old, new = PartitionMap.ring(doc["ring"]["servers"]), PartitionMap.ring(n_servers)
    return int(round(sum(moved_fraction(t.rows, name_salt(t.name), old, new) * t.rows
                         for t in model.tables)))


def resume_line(doc: dict, path: Path, moved: int, minimum: int, model: Model,
                roles: Roles, saved_workers: int) -> str:
    """What a resumed job says first: where it starts; when the number of servers changed,
    how many rows changed server against the ring's ``minimum``; when the number of
    workers changed, that the rest of the epoch is shared out."""
    line = f"[mpips] resuming from {path} (step {doc['step']})"
    old_n = doc["ring"]["servers"]
    if old_n != roles.n_servers:
        total = sum(t.rows for t in model.tables)
        line += (f"; {old_n} -> {roles.n_servers} servers: {moved:,} of {total:,} rows "
                 f"({moved / total:.1%}) changed server, the ring's minimum is "
                 f"{minimum / total:.1%}")
    if saved_workers != roles.n_workers:
        line += (f"; {saved_workers} -> {roles.n_workers} workers: the batches left in the "
                 f"epoch are shared out")
    return line


def finish(comm: MPI.Intracomm, roles: Roles, result: JobResult) -> JobResult:
    """Collective over ``comm``: wait for every rank, free the communicators."""
    wait_all([comm.Ibarrier()])
    roles.free()
    return result
