"""Rank roles and their communicators.

World rank 0 is the scheduler, ranks ``1..S`` the servers, the rest the workers. Each role
gets its own communicator; ``ps`` joins servers (ranks ``0..S-1``) and workers (``S..``) for
the tables, ``ctl`` joins the scheduler (rank 0) and the workers (``1..W``) for progress and
evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mpi4py import MPI

from .errors import TopologyError

SCHEDULER, SERVER, WORKER = "scheduler", "server", "worker"


@dataclass
class Roles:
    """This rank's role and the communicators it talks on."""

    world: MPI.Intracomm
    role: str
    index: int                       # rank within its own role
    n_servers: int
    n_workers: int
    group: MPI.Intracomm             # the ranks of the same role
    ps: Optional[MPI.Intracomm]      # servers + workers; None on the scheduler
    ctl: Optional[MPI.Intracomm]     # scheduler + workers; None on servers

    def worker_ps_rank(self, w: int) -> int:
        """Rank of worker ``w`` in the ``ps`` communicator (servers come first)."""
        return self.n_servers + w

    def free(self) -> None:
        """Free the sub-communicators (collective over each)."""
        for comm in (self.group, self.ps, self.ctl):
            if comm is not None and comm != MPI.COMM_NULL:
                comm.Free()


def plan_roles(size: int, n_servers: int) -> tuple[int, int]:
    """(servers, workers) for ``size`` ranks; raises the same error on every rank."""
    if n_servers < 1:
        raise TopologyError(f"--servers must be >= 1, got {n_servers}")
    if size < n_servers + 2:
        raise TopologyError(
            f"{size} MPI rank(s) cannot hold 1 scheduler, {n_servers} server(s) and at least "
            f"1 worker: run with mpiexec -n {n_servers + 2} (or more), or lower --servers")
    return n_servers, size - 1 - n_servers


def split_roles(comm: MPI.Intracomm, n_servers: int) -> Roles:
    """Collective over ``comm``: assign roles and build the sub-communicators."""
    rank = comm.Get_rank()
    S, W = plan_roles(comm.Get_size(), n_servers)
    role = SCHEDULER if rank == 0 else SERVER if rank <= S else WORKER
    index = {SCHEDULER: 0, SERVER: rank - 1, WORKER: rank - 1 - S}[role]
    group = comm.Split([SCHEDULER, SERVER, WORKER].index(role), rank)
    ps = comm.Split(0 if role != SCHEDULER else MPI.UNDEFINED, rank)
    ctl = comm.Split(0 if role != SERVER else MPI.UNDEFINED, rank)
    none = lambda c: None if c == MPI.COMM_NULL else c  # noqa: E731
    return Roles(comm, role, index, S, W, group, none(ps), none(ctl))
