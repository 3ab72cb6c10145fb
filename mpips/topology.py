"""Rank roles, their communicators, the message tags and all rank arithmetic.

World rank 0 is the scheduler, ranks ``1..S+N`` the servers (``S`` active, then ``N``
standby: they start without partitions), the rest the workers. Each role gets its own
communicator; ``ps`` joins servers (ranks ``0..S+N-1``) and workers (after them) for the
tables, ``ctl`` joins the scheduler (rank 0) and the workers (``1..W``) for progress,
pauses and evaluation. Every tag and every conversion between a role index and a rank in
one of these communicators lives here, so no other module counts ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mpi4py import MPI

from .errors import TopologyError

SCHEDULER, SERVER, WORKER = "scheduler", "server", "worker"

# ---- message tags, by communicator -------------------------------------------------------
TAG_PUSH = 11          # ps: worker -> server, one encoded push message (or a pause mark)
TAG_ACK = 13           # ps: server -> worker, the step applied
TAG_MOVE = 14          # servers' group: partitions' rows and state moving between servers
TAG_PROGRESS = 21      # ctl: worker -> scheduler, a progress record
TAG_LOAD = 22          # ctl (workers' partition loads) and world (servers' busy time)
TAG_RECORD = 31        # world/ctl -> scheduler: pause and checkpoint records
TAG_REPLY = 32         # scheduler -> world/ctl: instructions and verdicts
TAG_NEVER = 41         # world: never sent; probed by waits under ULFM (faults.FaultWatch)

SCHEDULER_RANK = 0     # in the world and in ``ctl``


@dataclass
class Roles:
    """This rank's role and the communicators it talks on."""

    world: MPI.Intracomm
    role: str
    index: int                       # rank within its own role
    n_servers: int                   # server ranks, standby ones included
    n_workers: int
    group: MPI.Intracomm             # the ranks of the same role
    ps: Optional[MPI.Intracomm]      # servers + workers; None on the scheduler
    ctl: Optional[MPI.Intracomm]     # scheduler + workers; None on servers
    standby: int = 0                 # the last ``standby`` servers start without partitions

    @property
    def active_servers(self) -> int:
        """Servers that own partitions when a job starts."""
        return self.n_servers - self.standby

    @property
    def world_rank(self) -> int:
        """This rank's rank in the world."""
        if self.role == SCHEDULER:
            return SCHEDULER_RANK
        return self.server_world_rank(self.index) if self.role == SERVER \
            else 1 + self.n_servers + self.index

    def worker_ps_rank(self, w: int) -> int:
        """Rank of worker ``w`` in ``ps`` (servers come first)."""
        return self.n_servers + w

    def ps_worker(self, rank: int) -> int:
        """The worker whose rank in ``ps`` is ``rank``."""
        return rank - self.n_servers

    @staticmethod
    def server_ps_rank(s: int) -> int:
        """Rank of server ``s`` in ``ps`` (and in the servers' ``group``)."""
        return s

    @staticmethod
    def server_world_rank(s: int) -> int:
        """Rank of server ``s`` in the world (after the scheduler)."""
        return 1 + s

    @staticmethod
    def world_server(rank: int) -> int:
        """The server whose world rank is ``rank``."""
        return rank - 1

    @staticmethod
    def worker_ctl_rank(w: int) -> int:
        """Rank of worker ``w`` in ``ctl`` (after the scheduler)."""
        return 1 + w

    @staticmethod
    def ctl_worker(rank: int) -> int:
        """The worker whose rank in ``ctl`` is ``rank``."""
        return rank - 1

    def free(self) -> None:
        """Free the sub-communicators (collective over each)."""
        for comm in (self.group, self.ps, self.ctl):
            if comm is not None and comm != MPI.COMM_NULL:
                comm.Free()


def plan_roles(size: int, n_servers: int, standby: int = 0) -> tuple[int, int]:
    """(server ranks, workers) for ``size`` ranks; raises the same error on every rank."""
    if n_servers < 1:
        raise TopologyError(f"--servers must be >= 1, got {n_servers}")
    if standby < 0:
        raise TopologyError(f"--standby must be >= 0, got {standby}")
    servers = n_servers + standby
    if size < servers + 2:
        extra = f" and {standby} standby server(s)" if standby else ""
        raise TopologyError(
            f"{size} MPI rank(s) cannot hold 1 scheduler, {n_servers} server(s){extra} and "
            f"at least 1 worker: run with mpiexec -n {servers + 2} (or more), or lower "
            f"--servers")
    return servers, size - 1 - servers


def world_role(rank: int, n_servers: int, n_workers: int) -> tuple[str, int]:
    """(role, index within the role) of world rank ``rank`` in a job of ``n_servers``
    server ranks and ``n_workers`` workers."""
    if not 0 <= rank <= n_servers + n_workers:
        raise TopologyError(f"world rank {rank} is not in a job of "
                            f"{1 + n_servers + n_workers} ranks")
    if rank == SCHEDULER_RANK:
        return SCHEDULER, 0
    if rank <= n_servers:
        return SERVER, Roles.world_server(rank)
    return WORKER, rank - 1 - n_servers


def split_roles(comm: MPI.Intracomm, n_servers: int, standby: int = 0) -> Roles:
    """Collective over ``comm``: assign roles and build the sub-communicators."""
    rank = comm.Get_rank()
    S, W = plan_roles(comm.Get_size(), n_servers, standby)
    role, index = world_role(rank, S, W)
    group = comm.Split([SCHEDULER, SERVER, WORKER].index(role), rank)
    ps = comm.Split(0 if role != SCHEDULER else MPI.UNDEFINED, rank)
    ctl = comm.Split(0 if role != SERVER else MPI.UNDEFINED, rank)
    none = lambda c: None if c == MPI.COMM_NULL else c  # noqa: E731
    return Roles(comm, role, index, S, W, group, none(ps), none(ctl), standby)
