"""One training job: split the ranks into roles, build the tables, run each role's loop."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from mpi4py import MPI

from .admission import RowPolicy
from .board import ClockBoard
from .checkpoint import manifest
from .checkpoint.layout import complete_steps, resume_candidates
from .checkpoint.manifest import check_setup, positions
from .checkpoint.saving import agree_restore, restore_live, restore_server, \
    resume_placement, saved_map
from .client import TableClient
from .clocks import StalenessLog, Start, effective_sync, job_bound
from .config import TrainConfig
from .data.plan import DataPlan, plan_data
from .data.schedule import Schedule, entry_at, worker_entries
from .errors import CheckpointError, ConfigError
from .models import Model, build_model
from .optim import Optimizer
from .pause import Coordinator, park, server_end
from .faults import FaultWatch, go_on, is_failure, ulfm_enabled
from .killing import KillSwitch
from .load import LoadStats
from .placement import Placement, moved_fraction
from .rebalance import LoadWatch, Rebalancer, partition_bytes
from .recovery import Held, JobShape, Recoveries, Standing, kept_steps, live_map, \
    owned_rows, survivors
from .ring import PartitionMap, name_salt
from .planner import Planner, check_schedule
from .pullcache import pull_caches
from .reports import reduce_server_stats, send_evaluation
from .scheduler import run_scheduler
from .server import run_server
from .slurm import stop_requested
from .store import ShardStore, shard_bytes
from .topology import SCHEDULER, SERVER, WORKER, Roles, plan_roles, split_roles
from .validation import EarlyStopping, eval_schedule
from .waiting import wait_all
from .wire import allgather_json, bcast_json
from .worker import Worker


@dataclass
class JobResult:
    """What this rank knows at the end: the scheduler the metrics, workers the parameters
    (when asked for), servers the number of pushes they applied; every rank the failures
    the job survived (ULFM)."""

    role: str
    metrics: Optional[dict] = None
    params: dict[str, np.ndarray] = field(default_factory=dict)
    pushes: int = 0
    failures_survived: int = 0


def describe(cfg: TrainConfig, roles: Roles, train_rows: int, test_rows: int,
             val_rows: int = 0) -> str:
    """The scheduler's opening line: model, data, sizes and roles."""
    data = cfg.data or f"built-in synthetic data (seed {cfg.seed})"
    val = f" / {val_rows:,} validation" if val_rows else ""
    return (f"[mpips] {cfg.model} + {cfg.optimizer} (lr {cfg.lr}) on {data}: "
            f"{train_rows:,} train / {test_rows:,} test{val} rows, {cfg.epochs} epoch(s), "
            f"batch "
            f"{cfg.batch_size}/worker; 1 scheduler, {roles.active_servers} server(s), "
            + (f"{roles.standby} standby, " if roles.standby else "")
            + f"{roles.n_workers} worker(s)" + batch_warning(cfg, train_rows, roles.n_workers))


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
                       data.train.fields, cfg.hidden, cfg.admitting)


def check_memory(cfg: TrainConfig, model: Model, n_servers: int) -> None:
    """Refuse tables that cannot fit: a server's share against this machine's memory."""
    optimizer = Optimizer(cfg.optimizer)
    need = sum(shard_bytes(spec, int(1.1 * spec.rows / n_servers) + 1, optimizer,
                           cfg.pull_codec_of(spec.name, spec.rows, spec.dim))
               for spec in model.tables)
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise ConfigError(f"--table-rows {cfg.table_rows:,} needs about {need / 2**30:.1f} GiB "
                          f"per server, more than this node's {have / 2**30:.1f} GiB: lower "
                          f"--table-rows or raise --servers")


def prepare(cfg: TrainConfig, size: int, rank: int = 0) -> DataPlan:
    """Checks made before any communication: ranks, memory, output file (on the scheduler,
    who writes it) and data files. ``agree_on_setup`` makes every rank share the verdict."""
    n_servers, n_workers = plan_roles(size, cfg.servers, cfg.standby)
    data = plan_data(cfg)
    model = model_of(cfg, data)
    check_memory(cfg, model, cfg.servers)
    check_schedule(cfg, cfg.servers, cfg.standby)
    slow_server = cfg.slow_server_factor()
    if slow_server is not None and slow_server[0] >= n_servers:
        raise ConfigError(f"--slow-server {cfg.slow_server}: there are only {n_servers} "
                          f"servers (0..{n_servers - 1})")
    for server, step in cfg.drains():
        if server >= n_servers:
            raise ConfigError(f"--drain-at {server}:{step}: there are only {n_servers} "
                              f"servers (0..{n_servers - 1})")
    kill = cfg.kill()
    if kill is not None and kill[0] >= size:
        raise ConfigError(f"--kill-at {cfg.kill_at}: there are only {size} ranks "
                          f"(0..{size - 1})")
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
    if (cfg.checkpointing or cfg.early_stop) and rank == 0:
        folder = cfg.run_dir if cfg.checkpointing else Path(cfg.checkpoint_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--checkpoint-dir: cannot create {folder} ({exc})") \
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
    ``verbose`` False keeps the scheduler quiet (benchmarks run many jobs). Under ULFM,
    when workers or servers die, the survivors go on (``recover``)."""
    data = data or prepare(cfg, comm.Get_size(), comm.Get_rank())
    job_cfg, cfg = cfg, with_best_dir(comm, cfg)
    temporary = cfg is not job_cfg
    watch = FaultWatch(comm) if ulfm_enabled() else None
    recoveries = Recoveries()
    lost: Optional[Lost] = None
    try:
        while True:
            standing = Standing(lambda: shape_now(cfg, data, comm))
            try:
                live = None
                if lost is not None:
                    go_on(comm, recoveries)
                    live = agree_live(comm, cfg, data, lost)
                result = _train(cfg, comm, return_params, data, verbose, standing, watch,
                                recoveries, live)
                result.failures_survived = recoveries.survived
                return result
            except BaseException as exc:
                if watch is None or not is_failure(exc):
                    raise
                comm, cfg, lost = recover(watch, standing, exc, recoveries, cfg)
                watch = FaultWatch(comm)
    finally:
        if watch is not None:
            watch.close()
        if temporary and comm.Get_rank() == 0:       # a job without checkpoints
            shutil.rmtree(cfg.checkpoint_dir, ignore_errors=True)


@dataclass(frozen=True)
class Lost:
    """Ranks that died (world ranks of the job of ``shape``), and where this survivor
    stood then (``standing``)."""

    shape: JobShape
    dead: list[int]
    standing: Standing

    def servers(self) -> list[int]:
        """The indices of the servers among the dead."""
        return [i for role, i in map(self.shape.role_of, self.dead) if role == SERVER]


@dataclass(frozen=True)
class Live:
    """Where the survivors of a failure go on from without going back (``kept_steps``):
    the job there as a checkpoint's manifest would give it (``step``, the furthest
    worker's; every old worker's entry; the placement's ``owner`` and ``epoch``, the dead
    servers' partitions given to the survivors), a server's kept rows, and the dead
    servers' partitions (``reload``) that come back from ``checkpoint`` (manifest,
    folder): ``rows`` rows, ``steps_back`` steps back."""

    doc: dict
    arrays: Optional[dict[str, np.ndarray]] = None
    reload: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    checkpoint: Optional[tuple[dict, Path]] = None
    rows: int = 0
    steps_back: int = 0


def agree_live(comm: MPI.Intracomm, cfg: TrainConfig, data: DataPlan, lost: Lost
               ) -> Optional[Live]:
    """Collective over the survivors: may they go on from where they stand
    (``kept_steps``)? If so, the job's state there: the surviving workers' entries (with
    the scheduler's batch counters, if they share a pool), the dead ones' from their
    schedules (``entry_at``), the first server's placement with the dead servers'
    partitions given to the survivors (``live_map``); None: every rank goes back to the
    checkpoint."""
    mine = lost.standing.held()
    held = allgather_json(comm, None if mine is None else asdict(mine))
    steps = kept_steps(lost.shape, lost.dead, [None if h is None else Held(**h)
                                               for h in held])
    if steps is None:
        return None
    part = lost.standing.part(steps[mine.index])
    arrays = part if mine.role == SERVER else None
    if arrays is not None:
        part = {"owner": arrays["owner"].tolist(), "epoch": int(arrays["epoch"][0])}
    parts = allgather_json(comm, part)
    begin, where = parts[0], parts[1]              # the scheduler's, the first server's
    gone = lost.servers()
    entries = {e["index"]: e for e in parts[1 + lost.shape.servers - len(gone):]}
    for rank in lost.dead:
        role, w = lost.shape.role_of(rank)
        if role != WORKER:
            continue
        begun = begin["workers"][w] if begin["workers"] else None
        sched = Schedule.of(cfg, data.train_range, w, lost.shape.workers).resumed(begun)
        entries[w] = entry_at(sched, begun, w, steps[w])
    if begin["counters"] is not None:          # a pool: every worker lives (kept_steps)
        entries = {w: dict(e, pool=begin["counters"][w]) for w, e in entries.items()}
    step = max(int(e["step"]) for e in entries.values())
    owner, reload = live_map(np.array(where["owner"], np.int32), lost.shape.servers, gone)
    checkpoint = None
    if reload.size:
        path = resume_candidates(recovery_source(cfg), cfg.run_dir)[0]
        checkpoint = manifest.load(path), path
    doc = {"step": step, "workers": [entries[w] for w in range(lost.shape.workers)],
           "seconds": begin["seconds"], "moved_rows": 0, "moved_rows_minimum": 0,
           "owner": owner.tolist(), "epoch": where["epoch"] + bool(reload.size)}
    return Live(doc, arrays, reload, checkpoint,
                owned_rows(lost.shape.placement, reload),
                step - int(checkpoint[0]["step"]) if checkpoint else 0)


def recover(watch: FaultWatch, standing: Standing, exc: BaseException,
            recoveries: Recoveries, cfg: TrainConfig
            ) -> tuple[MPI.Intracomm, TrainConfig, Lost]:
    """Collective over the survivors after ``exc``: agree on the dead (or end the job,
    raising ``JobLost``); returns the shrunk world, the settings the survivors go on
    with: their roles, from the last checkpoint (unless ``agree_live`` keeps the rows),
    without the test aids that name ranks (the ranks are numbered anew), and who died."""
    alive, shape, dead = watch.recover(standing, exc, recoveries)
    watch.close()
    left = survivors(shape, cfg.standby, dead)
    recoveries.what = ", ".join([*filter(None, [recoveries.what]),   # earlier in the series
                                 *(f"{role} {index} (rank {rank})" for rank in sorted(dead)
                                   for role, index in [shape.role_of(rank)])])
    changes: dict = dict(servers=left.servers, standby=left.standby, kill_at=None,
                         slow_worker=None, resume=recovery_source(cfg))
    if left.lost_servers:
        changes.update(slow_server=None, drain_at=(), join_at=())
    return alive, cfg.replace(**changes), Lost(shape, dead, standing)


def recovery_source(cfg: TrainConfig) -> Optional[str]:
    """Where a job that lost ranks goes on from: its own newest checkpoint, else the one
    it resumed from, else (None) the start."""
    if cfg.checkpointing and complete_steps(cfg.run_dir):
        return "latest"
    return cfg.resume


def shape_now(cfg: TrainConfig, data: DataPlan, comm: MPI.Intracomm) -> JobShape:
    """The job's shape as every survivor alike sees it once ranks died: its roles on
    ``comm``, its pacing, its starting placement, and the step of the checkpoint it would
    go back to (from the disk, which nobody writes while the survivors agree)."""
    servers, workers = plan_roles(comm.Get_size(), cfg.servers, cfg.standby)
    model = model_of(cfg, data)
    rounds, bound = job_bound([cfg.sync_of(t.name) for t in model.tables])
    source = recovery_source(cfg)
    step = None
    for path in resume_candidates(source, cfg.run_dir)[:1] if source else []:
        try:
            step = int(manifest.load(path)["step"])
        except CheckpointError:
            pass
    return JobShape(servers, workers, "bsp" if rounds else "async" if bound is None else "ssp",
                    Placement.start(model.tables, servers, cfg.servers, cfg.window_headroom),
                    step, not rounds or all(cfg.sync_of(t.name).mode == "bsp"
                                            for t in model.tables),
                    not rounds and cfg.balance != "off")


def went_on(recoveries: Recoveries, roles: Roles, resumed: Optional[dict], model: Model,
            verbose: bool, live: Optional[Live] = None) -> dict:
    """After a recovery, once every rank restored (or started over; ``live``: went on
    from where it stood, only the dead servers' rows reloaded): count it; the scheduler
    says so. Returns the final record's recovery fields."""
    if recoveries.pending:
        if live is not None:
            rows, back = live.rows, live.steps_back
        else:
            rows = sum(t.rows for t in model.tables) if resumed else 0
            back = max(recoveries.step - (resumed["step"] if resumed else 0), 0)
        what = recoveries.what
        seconds = recoveries.recovered(rows, back, time.monotonic())
        if verbose and roles.role == SCHEDULER:
            if live is None:
                where = f"the checkpoint of step {resumed['step']}" if resumed else "the start"
            else:
                where = f"step {resumed['step']}, the servers' rows as they stood" + (
                    f" and {rows:,} rows of the dead from the checkpoint {back} steps back,"
                    if rows else ",")
            print(f"[mpips] {what} died; the job goes on from {where} with "
                  f"{roles.active_servers} server(s) and {roles.n_workers} worker(s) "
                  f"({seconds:.2f} s to recover)", flush=True)
    return recoveries.summary()


def with_best_dir(comm: MPI.Intracomm, cfg: TrainConfig) -> TrainConfig:
    """Collective: the settings under which the job keeps its best parameters (early
    stopping): its own run folder when it writes checkpoints (they stay, as ``best``),
    else a fresh temporary folder under ``--checkpoint-dir`` (removed when the job ends),
    so that jobs without checkpoints never share one."""
    if not cfg.early_stop or cfg.checkpointing:
        return cfg
    folder = None
    if comm.Get_rank() == 0:
        Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        folder = tempfile.mkdtemp(prefix=f".{cfg.run_name}-best-", dir=cfg.checkpoint_dir)
    return cfg.replace(checkpoint_dir=bcast_json(comm, folder))


def _train(cfg: TrainConfig, comm: MPI.Intracomm, return_params: bool, data: DataPlan,
           verbose: bool, standing: Standing, watch: Optional[FaultWatch],
           recoveries: Recoveries, live: Optional[Live] = None) -> JobResult:
    """``train`` once the settings say where the best parameters go; ``standing`` learns
    where the job stands, for the plan if ranks die, ``watch`` (under ULFM) covers the
    roles' communicators, and ``recoveries`` counts the failures survived; ``live``: the
    job goes on from where it stood when ranks died (``agree_live``), not from
    checkpoints."""
    roles = split_roles(comm, cfg.servers, cfg.standby)
    if watch is not None:
        watch.cover([roles.group, roles.ps, roles.ctl])
    model = model_of(cfg, data)
    result = JobResult(roles.role)
    names = [t.name for t in model.tables]
    policies = [cfg.sync_of(n) for n in names]
    rounds, bound = job_bound(policies)
    balanced = not rounds and cfg.balance != "off"
    # The board carries SSP clocks and requested pauses (a timer, the stop signal, a move).
    board = ClockBoard(roles.ctl, roles.n_workers) if roles.ctl is not None else None
    optimizer = Optimizer(cfg.optimizer, lr=cfg.lr, l2=cfg.l2, l1=cfg.l1,
                          linear_lr=cfg.linear_lr)
    # Rank 0 lists the checkpoints, so that every rank tries the same ones in turn.
    candidates = [Path(p) for p in bcast_json(comm, [
        str(p) for p in resume_candidates(cfg.resume, cfg.run_dir)]
        if cfg.resume and live is None and comm.Get_rank() == 0 else [])]
    if live is None:
        placement, saved = agree_placement(comm, cfg, model, roles, candidates)
    else:
        placement, saved = Placement.of_map(
            model.tables, PartitionMap(np.array(live.doc["owner"], np.int32), roles.n_servers),
            live.doc["epoch"], cfg.window_headroom), None
    pull_codecs = [cfg.pull_codec_of(t.name, t.rows, t.dim) for t in model.tables]
    if roles.role == SCHEDULER:
        resumed = dict(live.doc) if live is not None else None
        if candidates:
            resumed, path, moved = agree_restore(comm, candidates, cfg)
        recovery = went_on(recoveries, roles, resumed, model, verbose, live)
        if live is not None:
            resumed["workers"] = worker_entries(resumed["workers"], cfg, data.train_range,
                                                roles.n_workers)
        if candidates:
            saved_workers = len(resumed["workers"])
            resumed["workers"] = worker_entries(resumed["workers"], cfg, data.train_range,
                                                roles.n_workers)
            minimum = moved_rows(model, saved, placement)
            if verbose:
                print(resume_line(resumed, path, moved, minimum, model, roles, saved_workers),
                      flush=True)
            resumed = dict(resumed, moved_rows=moved, moved_rows_minimum=minimum)
        if verbose:
            print(describe(cfg, roles, data.train_range[1] - data.train_range[0],
                           data.test_range[1] - data.test_range[0],
                           data.val_range[1] - data.val_range[0]), flush=True)
        loads = load_watch(cfg, model, optimizer, roles, placement)
        stopping = EarlyStopping.of_doc(cfg.early_stop, (resumed or {}).get("validation")) \
            if cfg.validating else None
        coord = Coordinator(cfg, roles, board, model.tables, optimizer.state_slots, placement,
                            Planner(cfg, roles.active_servers, loads.rebalancer),
                            stop_requested, resumed["seconds"] if resumed else 0.0, verbose,
                            balanced, loads.after_pause, stopping,
                            eval_schedule(cfg, data.train_range, roles.n_workers))
        coord.saved_step = resumed["step"] if candidates else None
        standing.step = lambda: coord.latest_step
        standing.held = lambda: Held(SCHEDULER)
        standing.part = lambda step: {"workers": resumed["workers"] if resumed else None,
                                      "seconds": coord.seconds_before,
                                      "counters": board.held_counters().tolist()
                                      if balanced else None}
        result.metrics = run_scheduler(cfg, roles, board, names,
                                       dict(effective_sync(dict(zip(names, policies))),
                                            balance=balanced), coord, loads,
                                       verbose, resumed,
                                       recovery if watch is not None else {})
        return finish(comm, roles, result)
    if roles.role == SERVER:
        with ShardStore(model.tables, roles, optimizer, placement, cfg.pull,
                        RowPolicy.of(cfg), pull_codecs) as store:
            start, log, resumed = None, None, None
            if live is not None:
                log, resumed = StalenessLog(names), dict(live.doc)
                restore_live(store, log, live.arrays, live.reload, live.checkpoint)
            if candidates:
                log = StalenessLog(names)
                resumed, _, _ = agree_restore(
                    comm, candidates, cfg, lambda doc, path: restore_server(store, log, doc,
                                                                            path))
            if resumed is not None:
                resumed["workers"] = worker_entries(resumed["workers"], cfg, data.train_range,
                                                    roles.n_workers)
                start = Start(tuple(positions(resumed)),
                              tuple(w["finished"] for w in resumed["workers"]))
            went_on(recoveries, roles, resumed, model, verbose, live)
            slow = cfg.slow_server_factor()
            report = run_server(store, policies, cfg.seed, start, log,
                                cfg.run_dir if cfg.checkpointing or cfg.early_stop else None,
                                slow[1] if slow is not None and slow[0] == roles.index
                                else 1.0, report=True, final=cfg.checkpointing,
                                kill=KillSwitch.of(cfg.kill(), roles.world_rank),
                                room=int(cfg.rebalance_mib * 2**20)
                                if rebalancing(cfg, roles) else 0,
                                standing=standing if watch is not None else None)
            if cfg.early_stop and not report.stopped:
                server_end(roles, store, cfg.run_dir)     # keep or restore the best
            result.pushes = report.applied
        reduce_server_stats(comm, names, report.staleness.hist, report.applied,
                            report.violations, (report.peak_rss, report.table_bytes),
                            rows=(store.admitted, store.evicted))
        return finish(comm, roles, result)
    with TableClient(model.tables, roles, placement, cfg.pull,
                     [cfg.compression_of(t.name, t.rows, t.dim) for t in model.tables],
                     cfg.residual_rows, cfg.link_gbps,
                     pull_caches(cfg.pull_cache, [t.dim for t in model.tables],
                                 [p.staleness for p in policies], rounds,
                                 roles.n_workers), pull_codecs) as client:
        resumed = dict(live.doc) if live is not None else None
        if candidates:
            resumed, _, _ = agree_restore(comm, candidates, cfg, client.restore_residuals)
        if resumed is not None:
            resumed["workers"] = worker_entries(resumed["workers"], cfg, data.train_range,
                                                roles.n_workers)
        went_on(recoveries, roles, resumed, model, verbose, live)
        worker = Worker(cfg, roles, client, model, data, bound, board,
                        not rounds and bound is not None,
                        resumed["workers"][roles.index] if resumed else None, balanced,
                        requests=cfg.checkpointing or rebalancing(cfg, roles))
        standing.step = lambda: worker.step
        standing.held, standing.part = worker.held, worker.entry_at
        worker.warm_up()
        client.ready()                         # the servers' shards are initialised
        stopped = worker.train()
        if not stopped:                        # take part in moves and validations until
            park(roles, client, worker.validate if cfg.validating else None)   # the end
        board.close()
        wait_all([roles.group.Ibarrier()])     # every worker's last step is applied
        worker.cache.free()
        if not stopped:
            send_evaluation(roles.ctl, worker.evaluate())
        if return_params:
            result.params = client.pull_all()
    reduce_server_stats(comm, names, bad_lines=data.bad_lines,
                        traffic=client.traffic.matrix(), dropped=client.dropped)
    return finish(comm, roles, result)


def rebalancing(cfg: TrainConfig, roles: Roles) -> bool:
    """Does this job move partitions by load? (``--rebalance auto``, two server ranks or
    more.)"""
    return cfg.rebalance == "auto" and roles.n_servers > 1


def load_watch(cfg: TrainConfig, model: Model, optimizer: Optimizer, roles: Roles,
               placement: Placement) -> LoadWatch:
    """The scheduler's load statistics, with a rebalancer when the job rebalances. The
    rebalancer may bring standby servers in unless ``--join-at`` schedules them."""
    stats = LoadStats(roles.n_servers, placement.pmap.partitions)
    stats.placement_changed(placement.epoch)
    rebalancer = None
    if rebalancing(cfg, roles):
        standby = [] if cfg.join_at else list(range(roles.active_servers, roles.n_servers))
        rebalancer = Rebalancer(stats, partition_bytes(model.tables,
                                                       len(optimizer.state_slots)),
                                cfg.rebalance_margin, cfg.rebalance_window,
                                cfg.rebalance_mib * 2**20, standby)
    return LoadWatch(stats, rebalancer, placement)


def agree_placement(comm: MPI.Intracomm, cfg: TrainConfig, model: Model, roles: Roles,
                    candidates: list[Path]) -> tuple[Placement, Optional[PartitionMap]]:
    """Collective: the placement this job starts on, decided by rank 0 and sent to all:
    a resumed job's from its newest checkpoint (``resume_placement``), else the ring over
    the active servers. Also returns the checkpoint's own map (None for a fresh job)."""
    found = None
    if comm.Get_rank() == 0 and candidates:
        try:
            doc = manifest.load(candidates[0])
            pmap, _ = saved_map(doc, candidates[0])
            chosen = resume_placement(doc, candidates[0], model.tables, roles.n_servers,
                                      roles.standby, cfg.window_headroom)
            found = [chosen.epoch, pmap.n_servers, pmap.owner.tolist(),
                     chosen.pmap.owner.tolist()]
        except CheckpointError:         # damaged: the restore says so and tries the next
            pass
    found = bcast_json(comm, found)
    if found is None:
        return Placement.start(model.tables, roles.n_servers, roles.active_servers,
                               cfg.window_headroom), None
    epoch, saved_servers, saved, owner = found
    pmap = PartitionMap(np.array(owner, np.int32), roles.n_servers)
    return (Placement.of_map(model.tables, pmap, epoch, cfg.window_headroom),
            PartitionMap(np.array(saved, np.int32), saved_servers))


def moved_rows(model: Model, saved: Optional[PartitionMap], placement: Placement) -> int:
    """Rows whose server differs between the checkpoint's map and this job's: the fewest
    that must move."""
    if saved is None:
        return 0
    return int(round(sum(moved_fraction(t.rows, name_salt(t.name), saved, placement.pmap)
                         * t.rows for t in model.tables)))


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
