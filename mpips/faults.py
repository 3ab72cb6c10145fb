"""Ranks that die, over MPI (ULFM): whether the job runs with fault tolerance, waits that
fail instead of hanging when a peer dies, and the survivors' agreement on who died.

Under Open MPI's ``mpiexec --with-ft ulfm`` (it sets ``OMPI_MCA_mpi_ft_enable``) an MPI
call that needs a dead rank raises ``MPI.Exception`` with ``ERR_PROC_FAILED`` (or
``ERR_PROC_FAILED_PENDING``, or ``ERR_REVOKED`` once someone revoked the communicator)
instead of hanging. Not every wait needs the dead rank: one-sided reads of a dead rank's
shared memory still succeed, and a rank may wait on clocks that the dead rank will never
advance. So the rank that first sees a failure revokes the world and the job's
sub-communicators (which also interrupts a blocking send to a survivor that stopped
receiving), and every polite wait (``waiting.idle_poll``) looks every ``CHECK_SECONDS``
whether they are revoked and raises ``PeerFailure`` if so; it also probes the world, which
drives the progress that delivers a revocation (a wait of one-sided reads alone does not).
Then the survivors shrink the world, which tells every one of them the same dead ranks
(``agree``), plan (``recover``) and, as the job goes on with them, agree that the series of
failures is not overdue (``go_on``). Under MPICH or Open MPI without ``--with-ft`` nothing
here is active: a dead rank ends the job through the launcher, as before.
"""
from __future__ import annotations

import os
import time
from typing import Sequence

from mpi4py import MPI

from . import waiting
from .errors import MpipsError
from .wire import reduce_int
from .recovery import JobShape, Recoveries, Standing, ending
from .topology import TAG_NEVER

FAILURE_CLASSES = frozenset(getattr(MPI, name) for name in
                            ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")
                            if hasattr(MPI, name))
# ``Testall`` and friends say only that some request failed: maybe a dead peer.
MAYBE_FAILURE = FAILURE_CLASSES | {MPI.ERR_IN_STATUS}
CHECK_SECONDS = 0.05        # how often a polite wait looks for a revoked communicator


class PeerFailure(Exception):
    """A wait found a communicator revoked: another rank saw a peer die."""


def ulfm_enabled() -> bool:
    """Does this job run with ULFM fault tolerance (Open MPI, ``--with-ft ulfm``)?"""
    flag = os.environ.get("OMPI_MCA_mpi_ft_enable", "").strip().lower()
    return bool(FAILURE_CLASSES) and flag in ("1", "true", "yes", "on") \
        and MPI.Get_library_version().startswith("Open MPI")


def is_failure(exc: BaseException) -> bool:
    """May ``exc`` be the sign of a dead peer (or of a revoked communicator)? ``agree``
    tells for sure."""
    if isinstance(exc, PeerFailure):
        return True
    return isinstance(exc, MPI.Exception) and exc.Get_error_class() in MAYBE_FAILURE


class FaultWatch:
    """Under ULFM only: errors come back as exceptions, and every polite wait checks
    whether the world (or a communicator given to ``cover``) is revoked."""

    def __init__(self, world: MPI.Intracomm) -> None:
        self.world = world
        self.comms: list[MPI.Intracomm] = [world]
        world.Set_errhandler(MPI.ERRORS_RETURN)
        self._next = 0.0
        waiting.set_watch(self.check)

    def cover(self, comms: Sequence[MPI.Intracomm | None]) -> None:
        """Watch and, on a failure, revoke these communicators too (None: not on this
        rank)."""
        for comm in comms:
            if comm is not None:
                comm.Set_errhandler(MPI.ERRORS_RETURN)
                self.comms.append(comm)

    def close(self) -> None:
        """The job is over (its communicators freed): waits check nothing any more."""
        waiting.set_watch(None)
        self.comms = [self.world]

    def check(self) -> None:
        """Raise ``PeerFailure`` if a watched communicator is revoked (looked at every
        CHECK_SECONDS at most)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + CHECK_SECONDS
        if any(comm.Is_revoked() for comm in self.comms):
            raise PeerFailure("a communicator of the job is revoked")
        # A wait that makes only one-sided calls (SSP clocks on the board) never drives
        # the progress that delivers a revocation or a peer's death: a probe does, and
        # raises on either (a probe of any source fails once a peer of the world died).
        self.world.Iprobe(MPI.ANY_SOURCE, TAG_NEVER)

    def agree(self) -> tuple[list[int], MPI.Intracomm]:
        """Collective over the survivors: revoke every watched communicator (waking
        everyone), shrink the world; returns the dead world ranks, the same on every
        survivor, and the shrunk world."""
        waiting.set_watch(None)
        for comm in self.comms:
            if not comm.Is_revoked():
                comm.Revoke()
        alive = self.world.Shrink()
        everyone = self.world.Get_group()
        survivors = alive.Get_group()
        mine = MPI.Group.Translate_ranks(everyone, list(range(everyone.Get_size())),
                                         survivors)
        everyone.Free()
        survivors.Free()
        dead = [r for r, there in enumerate(mine) if there == MPI.UNDEFINED]
        return dead, alive

    def recover(self, standing: Standing, exc: BaseException, recoveries: Recoveries
                ) -> tuple[MPI.Intracomm, JobShape, list[int]]:
        """Collective over the survivors, after ``exc`` (``is_failure``): agree on the dead
        ranks and plan (``recovery.plan``). Returns the shrunk world, the job's shape and
        the dead ranks; raises ``JobLost`` when the plan ends the job (every survivor
        plans alike, from the same dead ranks and shape), or ``exc`` itself when no rank
        died (an MPI error of another kind). Only ``Shrink`` talks: a failure during it is
        part of it, and later ones surface in the collectives of the job going on."""
        caught = time.monotonic()
        dead, alive = self.agree()
        if not dead:
            alive.Free()
            raise exc
        shape = standing.shape()
        message = ending(recoveries.failed(shape, dead, standing.step(), caught))
        if message is not None:
            raise end_lost(alive, message)
        return alive, shape, dead


def go_on(comm: MPI.Intracomm, recoveries: Recoveries) -> None:
    """Collective over the survivors (``comm``) as the job goes on after a failure: agree
    (``MPI_Comm_agree``) that the series of failures is not overdue, on every survivor
    alike, else end the job (``JobLost``); and learn the furthest step any of them stood
    at when it began."""
    if not comm.Agree(int(not recoveries.overdue(time.monotonic()))):
        raise end_lost(comm, recoveries.overdue_message())
    recoveries.step = reduce_int(comm, recoveries.step, MPI.MAX)


class JobLost(MpipsError):
    """The job ends because ranks died; ``report`` on the one rank that says so."""

    def __init__(self, message: str, report: bool) -> None:
        super().__init__(message)
        self.report = report


def end_lost(alive: MPI.Intracomm, message: str) -> JobLost:
    """Collective over the survivors (``alive``): wait for every one, so that all end
    together, and free ``alive``; the first survivor (the scheduler, if it lives) is the
    one that reports ``message``."""
    report = alive.Get_rank() == 0
    alive.Barrier()
    alive.Free()
    return JobLost(message, report)
