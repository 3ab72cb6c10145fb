"""One training job: split the ranks into roles, build the tables, run each role's loop."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from mpi4py import MPI

from .config import TrainConfig
from .data.plan import DataPlan, plan_data
from .errors import ConfigError
from .models import build_model
from .optim import Optimizer
from .scheduler import run_scheduler
from .server import run_server
from .tables import Tables
from .topology import SCHEDULER, SERVER, Roles, plan_roles, split_roles, wait_all
from .worker import Worker, send_evaluation


@dataclass
class JobResult:
    """What this rank knows at the end: the scheduler the metrics, workers the parameters
    (when asked for), servers the number of steps they served."""

    role: str
    metrics: Optional[dict] = None
    params: dict[str, np.ndarray] = field(default_factory=dict)
    steps: int = 0


def describe(cfg: TrainConfig, roles: Roles, train_rows: int, test_rows: int) -> str:
    data = cfg.data or f"built-in synthetic data (seed {cfg.seed})"
    return (f"[mpips] {cfg.model} + {cfg.optimizer} (lr {cfg.lr}) on {data}: "
            f"{train_rows:,} train / {test_rows:,} test rows, {cfg.epochs} epoch(s), batch "
            f"{cfg.batch_size}/worker; 1 scheduler, {roles.n_servers} server(s), "
            f"{roles.n_workers} worker(s)")


def prepare(cfg: TrainConfig, size: int) -> DataPlan:
    """Checks every rank makes alike before any communication: ranks, output and data."""
    plan_roles(size, cfg.servers)
    if cfg.metrics_out is not None:
        folder = Path(cfg.metrics_out).resolve().parent
        if not folder.is_dir():
            raise ConfigError(f"--metrics-out {cfg.metrics_out}: folder {folder} does not exist")
    return plan_data(cfg)


def train(cfg: TrainConfig, comm: MPI.Intracomm = MPI.COMM_WORLD,
          return_params: bool = False, data: Optional[DataPlan] = None) -> JobResult:
    """Collective over ``comm``: train and evaluate; every rank returns its ``JobResult``."""
    data = data or prepare(cfg, comm.Get_size())
    roles = split_roles(comm, cfg.servers)
    model = build_model(cfg.model, cfg.table_rows)
    result = JobResult(roles.role)
    if roles.role == SCHEDULER:
        print(describe(cfg, roles, data.train_range[1] - data.train_range[0],
                       data.test_range[1] - data.test_range[0]), flush=True)
        result.metrics = run_scheduler(cfg, roles)
    else:
        optimizer = Optimizer(cfg.optimizer, lr=cfg.lr, l2=cfg.l2)
        tables = Tables(model.tables, roles, optimizer, pull=cfg.pull)
        if roles.role == SERVER:
            result.steps = run_server(roles, tables)
        else:
            worker = Worker(cfg, roles, tables, model, data)
            worker.warm_up()
            roles.ps.Barrier()                 # pairs with the servers' "shards ready"
            worker.train()
            wait_all([roles.group.Ibarrier()])  # every worker's last step is applied
            send_evaluation(roles.ctl, worker.evaluate())
            if return_params:
                result.params = worker.pull_all()
        wait_all([roles.ps.Ibarrier()])        # no window is freed while a worker reads
        tables.free()
    wait_all([comm.Ibarrier()])
    roles.free()
    return result
