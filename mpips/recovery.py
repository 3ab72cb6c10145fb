"""What a job does when ranks die (live recovery under ULFM). Pure, no MPI: the world ranks
found dead go in, a plan comes out; ``faults`` and ``job`` carry it out with MPI.

- **The scheduler dies**: the job ends with a clear message; it resumes from its
  checkpoints (``--resume``). The scheduler holds the board (clocks, batch counters, the
  control word), so nobody can take its place.
- **A worker dies**: the survivors go on without it (``DropWorkers``); its batches not
  yet trained are shared out among the others (``data.schedule.regroup``), and training
  goes on to the planned number of samples.
- **A server dies**: its partitions come back from the last checkpoint onto the
  surviving servers (``ReloadServers``; the plan's moves are the ring's minimal movement,
  as for a drain or a resume onto fewer servers). A job without a checkpoint yet, or that
  lost every server with partitions, ends.
- When the servers' counts settle every push (``kept_steps``: every surviving server
  applied the same pushes, and no worker of a shared pool died) and only workers died, or
  under SSP and ASP workers and servers, the survivors go on from where they stand: the
  surviving servers keep their rows and optimiser state, nobody goes back, and only a dead
  server's rows come back from the checkpoint (``live_map``). Otherwise every survivor goes
  back to the last checkpoint (or, with none and only workers dead, to the start): pushes
  in flight are then dropped whole, and under BSP, which does not depend on the number of
  servers, the result is that of the run that lost nobody. ``Recoveries`` counts the rows
  reloaded and the steps the job went back.
- **A second failure during a recovery** plans again, unless ``RECOVERY_DEADLINE``
  seconds have passed since the first failure of the series: then the job ends (every
  wait has a failure path, so nothing hangs).
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
    ``async``), the placement now, the step of the last checkpoint (None: none yet),
    whether the servers' counts of pushes applied tell where every worker stands
    (``countable``): not when BSP tables sit beside others (those apply pushes as they
    arrive, outside the rounds), and whether workers share a pool of batches
    (``pooled``: balanced SSP/ASP; the batches a dead worker took are counted nowhere,
    while a living one says what it took)."""

    servers: int
    workers: int
    pacing: str
    placement: Placement
    checkpoint_step: Optional[int] = None
    countable: bool = True
    pooled: bool = False

    def role_of(self, rank: int) -> tuple[str, int]:
        """(role, index within the role) of world rank ``rank``."""
        return world_role(rank, self.servers, self.workers)


@dataclass(frozen=True)
class End:
    """Stop the job: ``message`` says why, and how to go on (resume from checkpoints)."""

    message: str


@dataclass(frozen=True)
class DropWorkers:
    """Go on without ``workers``: shrink, re-hand their untrained batches; their pushes
    in flight are settled by ``kept_steps`` (whole on every server or on none), else every
    rank goes back to the checkpoint."""

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


FINISHED = 1 << 62       # the step to go on from of a worker that trained all its steps


@dataclass(frozen=True)
class Held:
    """What one survivor holds of the job as it stood when ranks died, its rows or state
    as they stand: a server, the BSP rounds it applied (``steps``) or, under SSP and ASP,
    each worker's next step it expects (``at``; None: finished); a worker (``index``),
    its acknowledged steps, whether its push of the next one is out (sent, not
    acknowledged) and whether it has trained all its steps; the scheduler nothing."""

    role: str
    steps: int = 0
    pushed: bool = False
    done: bool = False
    index: int = 0
    at: Optional[Sequence[Optional[int]]] = None


def kept_steps(shape: JobShape, dead: Sequence[int], held: Sequence[Optional[Held]]
               ) -> Optional[list[int]]:
    """Each old worker's step the survivors go on from with the servers' rows as they
    stand (nobody goes back; ``FINISHED``: it had finished), or None: back to the
    checkpoint. Only when workers alone died, or under SSP and ASP workers and servers
    (then only the dead servers' rows come back from the checkpoint, ``live_map``), every
    survivor kept its state (None: one did not), the job is ``countable`` (and, if
    ``pooled``, no worker died), and every surviving server applied the same pushes of
    every worker: under BSP the same rounds R (a round is applied only once every
    worker's push of it arrived, so a dead worker's push in flight is applied whole on
    every server or on none; the survivors' pushes of round R, held unapplied, are
    dropped and redone), under SSP and ASP the same last step of each worker (a push
    applied on some servers only is torn: back to the checkpoint). A surviving worker
    stands there, or one step before with its push out (applied, its acknowledgement
    lost), or has finished."""
    roles = [shape.role_of(r)[0] for r in dead]
    if not shape.countable or any(h is None for h in held) or not all(
            role == WORKER or (role == SERVER and shape.pacing != "bsp") for role in roles) \
            or (shape.pooled and WORKER in roles):
        return None
    servers = [h for h in held if h.role == SERVER]
    if shape.pacing == "bsp":
        seen = {(h.steps,) * shape.workers for h in servers}
    else:
        seen = {tuple(FINISHED if s is None else s for s in h.at) for h in servers}
    if len(seen) != 1:
        return None
    steps = list(seen.pop())
    for h in held:
        step = steps[h.index] if h.role == WORKER else None
        if step is not None and not (h.done or step == h.steps or (
                h.pushed and (step == h.steps + 1 or step == FINISHED))):
            return None
    return steps


def live_map(owner: np.ndarray, servers: int, dead: Sequence[int]
             ) -> tuple[np.ndarray, np.ndarray]:
    """The partition map the survivors go on with when servers ``dead`` (of ``servers``,
    whose map stood at ``owner``) died and the rest keep their rows: the dead ones'
    partitions go to the ring over the surviving servers that hold partitions (all the
    survivors, if none does), the ring's minimal movement; servers numbered anew in their
    old order. Returns (new owners, the partitions that come back from the checkpoint)."""
    gone = set(dead)
    alive = [s for s in range(servers) if s not in gone]
    takers = [s for s in np.unique(owner).tolist() if s in alive] or alive
    lost = np.flatnonzero(np.isin(owner, list(dead)))
    new = owner.copy()
    new[lost] = ring_owners(takers, owner.size)[lost]
    number = np.full(servers, -1, np.int32)
    number[alive] = np.arange(len(alive), dtype=np.int32)
    return number[new], lost


@dataclass(frozen=True)
class Survivors:
    """The roles left after ranks died: active servers, standby servers and workers
    (their order in the shrunk world is that of the job's: servers, then workers)."""

    servers: int
    standby: int
    workers: int
    lost_servers: bool             # a server died: its rows come back from a checkpoint


def survivors(shape: JobShape, standby: int, dead: Sequence[int]) -> Survivors:
    """What is left of ``shape`` (whose last ``standby`` servers started without
    partitions) without world ranks ``dead`` (workers and servers only)."""
    roles = [shape.role_of(r) for r in set(dead)]
    servers = [i for role, i in roles if role == SERVER]
    active = shape.servers - standby
    gone = sum(i < active for i in servers)
    return Survivors(active - gone, standby - (len(servers) - gone),
                     shape.workers - sum(role == WORKER for role, _ in roles), bool(servers))


@dataclass
class Recoveries:
    """A job's failures over time, and the final record's ``failures_survived``,
    ``rows_reloaded``, ``recovery_seconds`` and ``recovery_steps_back``. Call ``failed``
    when ranks are found dead, ``recovered`` once the job goes on."""

    began: Optional[float] = None                   # when the series under way began
    step: int = 0                                   # the step the job stood at then
    what: str = ""                                  # who died in it, in words
    survived: int = 0
    rows: int = 0
    seconds: list[float] = field(default_factory=list)
    steps_back: list[int] = field(default_factory=list)

    def failed(self, shape: JobShape, ranks: Sequence[int], step: int, now: float
               ) -> list[Action]:
        """Ranks of ``shape`` found dead at time ``now`` (seconds) when this rank stood at
        ``step``: their plan. The series (failures before the job went on again) began at
        the first."""
        if self.began is None:
            self.began, self.step = now, step
        return plan(shape, ranks, step)

    def overdue(self, now: float) -> bool:
        """Has the series under way lasted too long (``RECOVERY_DEADLINE``)?"""
        return self.began is not None and now - self.began > RECOVERY_DEADLINE

    def overdue_message(self) -> str:
        """Why the job ends when the series is overdue."""
        return (f"ranks died again and again and the job could not recover within "
                f"{RECOVERY_DEADLINE:.0f} s: run the same command with --resume to "
                f"continue from the last checkpoint")

    @property
    def pending(self) -> bool:
        """Is a recovery under way?"""
        return self.began is not None

    def recovered(self, rows: int, steps_back: int, now: float) -> float:
        """The job goes on, ``rows`` rows reloaded from a checkpoint ``steps_back`` steps
        back: count the failure survived; returns the seconds it took."""
        if self.began is None:
            raise ValueError("recovered without a failure")
        self.survived += 1
        self.rows += rows
        self.seconds.append(now - self.began)
        self.steps_back.append(steps_back)
        self.began, self.what = None, ""
        return self.seconds[-1]

    def summary(self) -> dict:
        """The final record's fields."""
        return {"failures_survived": self.survived, "rows_reloaded": self.rows,
                "recovery_seconds": list(self.seconds),
                "recovery_steps_back": list(self.steps_back)}


def ending(actions: Sequence[Action]) -> Optional[str]:
    """The one line a job ends with under the plan ``actions``, or None to go on."""
    return next((a.message for a in actions if isinstance(a, End)), None)


@dataclass
class Standing:
    """Where the job stands, as this rank knows it when ranks die: its shape, the highest
    step it knows applied, what it holds (``kept_steps``; None: nothing it may go on
    from) and, once the survivors agreed on the steps to go on from, its part of the job
    there (a worker's checkpoint entry; a server's rows; the scheduler's the entries the
    job started from, None for a fresh start, and the seconds trained before it)."""

    shape: Callable[[], JobShape]
    step: Callable[[], int] = lambda: 0
    held: Callable[[], Optional[Held]] = lambda: None
    part: Callable[[int], object] = lambda step: None
