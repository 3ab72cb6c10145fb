"""``mpips predict --servers S`` under ``mpiexec``: scoring with a model too large for
one process. Every use of the servers' store and the workers' client in predicting is
here.

Rank 0 writes the output; ranks ``1..S`` are servers, each reading only its own shard of
the checkpoint into RMA window memory (``restore_server``, as a resumed job does, any
number of servers); the other ranks are workers. Each worker takes a contiguous run of
the batches of the cut (``predict.Cut``), pulls the rows each batch needs one-sidedly and
scores it with the model's own ``predict``; rank 0 receives the probabilities in worker
order, which is row order. The cut does not depend on the number of workers here, so
the probabilities equal those of one process to the bit.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
from mpi4py import MPI

from .checkpoint.saving import agree_restore, restore_server
from .client import TableClient
from .clocks import StalenessLog
from .data import share
from .errors import ConfigError
from .export import score_batch
from .failures import abort_on_error, agree_on_setup
from .models import Lookup
from .optim import Optimizer
from .placement import Placement
from .predict import Meter, PredictJob, prepare, read_cut, score
from .reports import Evaluation, receive_evaluation, send_evaluation
from .store import ShardStore
from .topology import SCHEDULER, SERVER, plan_roles, split_roles
from .waiting import wait_all


def run_predict_ranks(args: argparse.Namespace, comm: MPI.Intracomm = MPI.COMM_WORLD
                      ) -> int:
    """Collective over ``comm``: check the setup on every rank (one line and exit 2 if
    it fails anywhere), then score."""
    found: dict = {}

    def check() -> None:
        plan_roles(comm.Get_size(), args.servers)
        if not Path(args.model).is_dir():
            raise ConfigError(f"{args.model}: under mpiexec the model must be a checkpoint "
                              f"or run folder (an exported file is scored in one process)")
        writes = comm.Get_rank() == 0
        found["job"] = prepare(args.model, args.data, args.out if writes else None,
                               args.format, args.config, args.on_bad_line,
                               args.metrics_out if writes else None, read=False)

    status = agree_on_setup(check, comm)
    if status is not None:
        return status
    return abort_on_error(lambda: predict_ranks(found["job"], args.servers, comm,
                                                args.progress_seconds), comm)


def puller(client: TableClient) -> Callable[[str, Lookup], None]:
    """Fill a lookup's rows from the servers, one-sidedly (as a worker's pull)."""
    def pull(name: str, lk: Lookup) -> None:
        client.pull(name, client.route(name, lk.keys), lk.rows)
    return pull


def predict_ranks(job: PredictJob, n_servers: int, comm: MPI.Intracomm,
                  progress_seconds: float = 2.0) -> int:
    """Collective over ``comm``: restore the shards on the servers, score on the
    workers, write on rank 0."""
    roles = split_roles(comm, n_servers)
    cfg = job.model.cfg.replace(servers=roles.n_servers)
    step_dir = Path(job.model.source)
    if roles.role == SCHEDULER:
        print(job.opening() + f"; {roles.n_servers} server(s), {roles.n_workers} worker(s)",
              flush=True)
        started = time.perf_counter()
        agree_restore(comm, [step_dir], cfg)
        loaded = time.perf_counter()
        ev = receive_evaluation(roles.ctl, roles.n_workers)
        seconds = time.perf_counter() - loaded
        job.conclude(ev.probs, ev.labels, seconds, servers=roles.n_servers,
                     workers=roles.n_workers, restore_seconds=loaded - started)
    elif roles.role == SERVER:
        net = job.model.net
        placement = Placement.start(net.tables, roles.n_servers, roles.n_servers)
        with ShardStore(net.tables, roles, Optimizer("sgd", lr=cfg.lr), placement) as store:
            agree_restore(comm, [step_dir], cfg, lambda doc, path: restore_server(
                store, StalenessLog(store.names), doc, path))
            store.ready()
    else:
        net = job.model.net
        placement = Placement.start(net.tables, roles.n_servers, roles.n_servers)
        with TableClient(net.tables, roles, placement) as client:
            agree_restore(comm, [step_dir], cfg)
            client.ready()
            score_batch(net, job.model.warm_batch(), puller(client))
            cut = job.cut
            picks = cut.batches()
            lo, hi = share(0, len(picks), roles.index, roles.n_workers)
            meter = Meter(cut.rows(picks[lo:hi]), progress_seconds, quiet=roles.index != 0,
                          label="predict (worker 0)")
            probs, labels = score(lambda batch: score_batch(net, batch, puller(client)),
                                  read_cut(job.rows.source, cut, picks[lo:hi]), meter)
            send_evaluation(roles.ctl, Evaluation(probs, labels, np.empty(0)))
    wait_all([comm.Ibarrier()])
    roles.free()
    return 0
