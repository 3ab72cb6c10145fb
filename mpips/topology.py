"""Rank roles and their communicators, polite waiting, and taking a failed job down.

World rank 0 is the scheduler, ranks ``1..S`` the servers, the rest the workers. Each role
gets its own communicator; ``ps`` joins servers (ranks ``0..S-1``) and workers (``S..``) for
the tables, ``ctl`` joins the scheduler (rank 0) and the workers (``1..W``) for progress and
evaluation.
"""
from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

from mpi4py import MPI

from .errors import MpipsError, TopologyError

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
        return self.n_servers + w

    @property
    def name(self) -> str:
        return f"{self.role} {self.index} (rank {self.world.Get_rank()} on {socket.gethostname()})"

    def free(self) -> None:
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


T = TypeVar("T")
# Longest sleep between polls. The back-off starts at 20 us; capping it here keeps a step's
# hand-offs (push -> server, ack -> worker) fast while an idle rank wakes only 4,000 times/s.
MAX_SLEEP = 2.5e-4


def idle_poll(poll: Callable[[], Optional[T]], max_sleep: float = MAX_SLEEP) -> T:
    """Call ``poll`` until it returns something, sleeping with back-off between calls.

    Blocking MPI calls busy-poll; with more ranks than cores that steals the CPU from the
    ranks doing the work, so every wait that may be long goes through here.
    """
    sleep = 0.0
    while (got := poll()) is None:
        time.sleep(sleep)
        sleep = min(max_sleep, sleep * 2 if sleep else 2e-5)
    return got


def idle_wait(done: Callable[[], bool], max_sleep: float = MAX_SLEEP) -> None:
    """Wait until ``done()`` is true, politely (see ``idle_poll``)."""
    idle_poll(lambda: True if done() else None, max_sleep)


def wait_all(requests: list[MPI.Request]) -> None:
    """Complete all ``requests`` politely (see ``idle_wait``)."""
    if requests:
        idle_wait(lambda: MPI.Request.Testall(requests))


def abort_on_error(main: Callable[[], int], comm: MPI.Comm = MPI.COMM_WORLD) -> int:
    """Run ``main``; an error on any rank takes the whole job down instead of hanging it.

    An ``MpipsError`` prints one line naming the rank; anything else prints the rank's
    header and traceback. Both then call ``MPI_Abort``, so no rank waits forever on a peer.
    """
    try:
        return main()
    except BaseException as exc:  # noqa: BLE001 - any failure must end the job
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        header = f"mpips: rank {comm.Get_rank()} of {comm.Get_size()} on {socket.gethostname()}"
        if isinstance(exc, KeyboardInterrupt):
            print(f"{header}: interrupted", file=sys.stderr, flush=True)
        elif isinstance(exc, MpipsError):
            print(f"{header}: error: {exc}", file=sys.stderr, flush=True)
        else:
            print(f"{header}: unhandled {type(exc).__name__}, aborting the job", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
        comm.Abort(1)
        os._exit(1)      # MPI_Abort may return before the launcher kills this process


def report_setup_error(exc: MpipsError, comm: MPI.Comm = MPI.COMM_WORLD) -> int:
    """A bad setting found identically by every rank before any communication: rank 0
    prints it once, and every rank exits with status 2."""
    if comm.Get_rank() == 0:
        print(f"mpips: error: {exc}", file=sys.stderr, flush=True)
    return 2
