"""What a job does when ranks die (live recovery under ULFM). Pure, no MPI: the world ranks
found dead go in, a plan comes out; ``faults`` carries it out with MPI.

- **The scheduler dies**: the job ends with a clear message; it resumes from its
  checkpoints (``--resume``). The scheduler holds the board (clocks, batch counters, the
  control word), so nobody can take its place.
- **A worker dies**: the survivors shrink their communicators; the dead worker's batches
  not yet trained go back to the others (the balance pool hands every batch out once);
  each of its pushes in flight is applied whole, on every server, or on none
  (``in_flight``), and training goes on to the planned number of samples.
- **A server dies**: its partitions are reloaded from the last checkpoint onto the
  surviving servers, each partition to the server the ring over the survivors gives it
  (the ring's minimal movement, as for a drain or a resume onto fewer servers).
  Under BSP every rank goes back to that checkpoint, so the result is that of the run that
  lost nobody; under SSP and ASP only the dead server's rows go back, and the plan says how
  many rows and how many steps they went back. A job without a checkpoint yet, or that
  lost every server with partitions, ends.
- **A second failure during a recovery**: the recovery starts again for every rank dead
  so far, unless ``RECOVERY_DEADLINE`` seconds have passed since the first failure of the
  series: then the job ends (every wait has a failure path, so nothing hangs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .placement import Moves, Placement
from .ring import partition_sizes, ring_owners
from .topology import SERVER, WORKER, Roles, world_role

RECOVERY_DEADLINE = 30.0      # seconds a series of failures may take before the job ends


@dataclass(frozen=True)
class JobShape:
    """What a recovery plan depends on: the world's roles (``servers`` server ranks after
    the scheduler, then ``workers``), how workers are paced (``bsp``, ``ssp`` or
    ``async``), the placement now, and the step of the last checkpoint (None: none yet)."""

    servers: int
    workers: int
    pacing: str
    placement: Placement
    checkpoint_step: Optional[int] = None

    def role_of(self, rank: int) -> tuple[str, int]:
        """(role, index within the role) of world rank ``rank``."""
        return world_role(rank, self.servers, self.workers)


@dataclass(frozen=True)
class End:
    """Stop the job: ``message`` says why, and how to go on (resume from checkpoints)."""

    message: str


@dataclass(frozen=True)
class DropWorkers:
    """Go on without ``workers``: shrink, re-hand their untrained batches, settle each
    one's pushes in flight with ``in_flight``."""

    workers: tuple[int, ...]


@dataclass(frozen=True)
class ReloadServers:
    """Go on without ``servers``: ``moves`` give their partitions to the survivors, whose
    ``rows`` come from the checkpoint of ``checkpoint_step``. ``rollback_all``: every rank
    goes back to that checkpoint (BSP); else only those rows, ``steps_back`` steps."""

    servers: tuple[int, ...]
    moves: Moves
    rows: int
    checkpoint_step: int
    rollback_all: bool
    steps_back: int


Action = End | DropWorkers | ReloadServers


def owned_rows(placement: Placement, partitions: np.ndarray) -> int:
    """Rows, over all tables, of ``partitions``."""
    return int(sum(partition_sizes(t.rows, t.salt, t.pmap.partitions)[partitions].sum()
                   for t in placement.layouts))


def plan(shape: JobShape, dead: Sequence[int], step: int) -> list[Action]:
    """The plan for world ranks ``dead`` when the job stands at ``step`` (the highest step
    applied): workers dropped first, then servers reloaded; or one ``End``."""
    roles = [shape.role_of(r) for r in sorted(set(dead))]
    if not all(role in (SERVER, WORKER) for role, _ in roles):
        return [End("the scheduler (rank 0) died; it holds the clocks and the batch "
                    "counters, so the job cannot go on: run the same command with "
                    "--resume to continue from the last checkpoint")]
    workers = tuple(i for role, i in roles if role == WORKER)
    servers = tuple(i for role, i in roles if role == SERVER)
    if len(workers) == shape.workers:
        return [End("every worker died: run the same command with --resume to continue "
                    "from the last checkpoint")]
    out: list[Action] = [DropWorkers(workers)] if workers else []
    if not servers:
        return out
    active = shape.placement.active()
    lost = [s for s in servers if s in active]       # a standby server holds nothing
    if lost and shape.checkpoint_step is None:
        return [End(f"server {lost[0]} (rank {Roles.server_world_rank(lost[0])}) died "
                    f"before the job's first checkpoint, so its rows are lost: write "
                    f"checkpoints (--checkpoint-every) to survive a server's death")]
    survivors = [s for s in active if s not in servers]
    if not survivors:
        return [End("every server holding partitions died: run the same command with "
                    "--resume to continue from the last checkpoint")]
    parts = np.flatnonzero(np.isin(shape.placement.pmap.owner, lost))
    moves = Moves(parts, ring_owners(survivors)[parts].astype(np.int32), "recover")
    since = shape.checkpoint_step if lost else step
    return out + [ReloadServers(servers, moves, owned_rows(shape.placement, parts), since,
                                bool(lost) and shape.pacing == "bsp", step - since)]


def in_flight(held: Sequence[Optional[int]], applied: Sequence[Optional[int]]
              ) -> tuple[Optional[int], bool]:
    """A dead worker's pushes in flight, settled: ``held[s]`` is the last step of its
    whose push server ``s`` received, ``applied[s]`` the last it applied (None: none).
    Returns (the last step every server is to apply, torn): a step every server received
    is applied whole everywhere; a later one that some servers lack is dropped by those
    that hold it unapplied. ``torn`` is True when a server already applied a push that
    another never received: it cannot be made whole, and the job rolls back (BSP) or
    reports it (SSP, ASP)."""
    got = [-1 if h is None else h for h in held]
    done = [-1 if a is None else a for a in applied]
    whole = min(got)
    return (None if whole < 0 else whole), max(done) > whole


@dataclass
class Recoveries:
    """A job's failures over time: each failure's plan, and the final record's
    ``failures_survived``, ``rows_reloaded`` and ``recovery_seconds``. Call ``failed``
    when ranks are found dead, ``recovered`` once the plan is carried out."""

    shape: JobShape
    dead: set[int] = field(default_factory=set)     # ranks dead in the series under way
    began: Optional[float] = None                   # when that series began
    survived: int = 0
    rows: int = 0
    seconds: list[float] = field(default_factory=list)

    def failed(self, ranks: Sequence[int], step: int, now: float) -> list[Action]:
        """Ranks found dead at time ``now`` (seconds): the plan for every rank dead since
        the last completed recovery, or ``End`` once the series took too long."""
        if self.began is None:
            self.began = now
        elif now - self.began > RECOVERY_DEADLINE:
            return [End(f"ranks {sorted(self.dead | set(ranks))} died within "
                        f"{now - self.began:.0f} s and the job could not recover within "
                        f"{RECOVERY_DEADLINE:.0f} s: run the same command with --resume")]
        self.dead |= set(ranks)
        return plan(self.shape, sorted(self.dead), step)

    def recovered(self, actions: Sequence[Action], now: float) -> None:
        """The plan ``actions`` is carried out: count the failure survived."""
        if self.began is None:
            raise ValueError("recovered without a failure")
        self.survived += 1
        self.rows += sum(a.rows for a in actions if isinstance(a, ReloadServers))
        self.seconds.append(now - self.began)
        self.dead, self.began = set(), None

    def summary(self) -> dict:
        """The final record's fields."""
        return {"failures_survived": self.survived, "rows_reloaded": self.rows,
                "recovery_seconds": list(self.seconds)}


@dataclass
class Standing:
    """Where the job stands, as this rank knows it when ranks die: its shape (the
    placement and the last checkpoint may have changed since the start) and its step."""

    shape: Callable[[], JobShape]
    step: Callable[[], int] = lambda: 0


def ending(actions: Sequence[Action], shape: JobShape, dead: Sequence[int]) -> str:
    """The one line a job prints when it ends after ranks ``dead`` died with the plan
    ``actions``: an ``End``'s message; for a plan that live recovery would carry out
    (not built yet), what died, what the plan was, and how to go on."""
    for action in actions:
        if isinstance(action, End):
            return action.message
    who = ", ".join(f"{role} {index} (rank {rank})" for rank in sorted(dead)
                    for role, index in [shape.role_of(rank)])
    steps = []
    for action in actions:
        if isinstance(action, DropWorkers):
            steps.append("drop the worker(s) and re-hand their batches")
        elif isinstance(action, ReloadServers):
            steps.append(f"reload {action.rows:,} rows from the checkpoint of step "
                         f"{action.checkpoint_step}")
    return (f"{who} died; live recovery ({'; '.join(steps)}) is not built yet, so the job "
            f"ends: run the same command with --resume to continue from the last checkpoint")
