"""Helpers for multi-rank tests that train a whole job on every rank of COMM_WORLD."""
import numpy as np
from mpi4py import MPI

from mpips.config import TrainConfig
from mpips.job import train

comm = MPI.COMM_WORLD


def run(cfg: TrainConfig) -> tuple[dict, dict]:
    """(parameters on the first worker, metrics on the scheduler), on every rank."""
    res = train(cfg, comm, return_params=True, verbose=False)
    first_worker = 1 + cfg.servers + cfg.standby
    params = comm.bcast(res.params if comm.Get_rank() == first_worker else None,
                        root=first_worker)
    return params, comm.bcast(res.metrics, root=0)


def same_params(a: dict, b: dict) -> bool:
    """Bit for bit (rows not admitted hold a NaN, which equals nothing by value)."""
    return a.keys() == b.keys() and all(np.array_equal(a[k].view(np.uint32),
                                                       b[k].view(np.uint32)) for k in a)
