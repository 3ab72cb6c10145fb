"""Pauses: when every worker stops at one step boundary, and what the job does there
(write a checkpoint, move partitions, stop). Pure, no MPI.

Workers stop at steps everyone knows in advance (``PauseSchedule``: multiples of
``--checkpoint-every`` and ``--move-every``, the steps of scheduled joins and drains) and
at steps requested through the scheduler's board. At a pause each worker marks it on every
server and sends the scheduler its position; each server, once every worker it still
serves has marked, tells the scheduler it paused. ``PauseMachine`` is the scheduler's part:
records in, actions out (``AskWrite``, ``Publish``, ``Verdict``), so that a whole pause,
including a checkpoint and a change of placement, is tested in one process. The thin
loop that talks MPI is ``pause.Coordinator``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .errors import ProtocolError
from .placement import Moves, Placement
from .validation import EvalSchedule


def pause_lead(bound: Optional[int]) -> int:
    """How far past its own step the first worker that sees a requested pause may name
    it, so that no worker has passed it: BSP 1 and SSP(S) S + 1 steps (no worker is
    further ahead than that), ASP 0 (every worker stops at its next step)."""
    return 0 if bound is None else bound + 1


@dataclass(frozen=True)
class PauseSchedule:
    """Steps every worker pauses before, known to all in advance."""

    checkpoint_every: int = 0
    move_every: int = 0
    steps: frozenset[int] = frozenset()       # scheduled joins and drains
    validations: EvalSchedule = EvalSchedule()

    def due(self, step: int) -> bool:
        return any(every > 0 and step % every == 0
                   for every in (self.checkpoint_every, self.move_every)) \
            or step in self.steps or self.validations.due(step)

    @property
    def any(self) -> bool:
        """Does this job ever pause on schedule?"""
        return bool(self.checkpoint_every or self.move_every or self.steps) \
            or self.validations.any

    def stops_at(self, step: int, start: int, word: int) -> bool:
        """Does a worker pause before ``step``? At the scheduled steps, and at or after
        the step named in the control word ``word``; never at ``start``, where the job
        began or resumed."""
        if step <= start:
            return False
        return self.due(step) or (word > 0 and step >= word)


# ---- replies from the scheduler, as int64 arrays -----------------------------------------
WRITE, GO, END, EVAL, RESTORE = 1, 2, 3, 4, 5
_STOP, _EARLY, _BEST, _KEEP = 1, 2, 4, 8          # bits of a reply's flags word


@dataclass(frozen=True)
class Reply:
    """What the scheduler tells servers and workers: ``WRITE`` a checkpoint for ``step``
    (``keep``: the run's periodic one, ``best``: the best parameters, or both); ``GO`` on
    (or ``stop`` at a checkpoint, or ``early``: training is over), after taking up
    ``moves`` under placement ``epoch``; ``EVAL``: score the validation rows; ``RESTORE``
    the best parameters (servers, when training is over); ``END``: training is over (to
    workers that finished)."""

    kind: int
    step: int = 0
    stop: bool = False
    epoch: int = 0
    moves: Optional[Moves] = None
    early: bool = False
    best: bool = False
    keep: bool = False

    def encode(self) -> np.ndarray:
        parts = (np.empty(0, np.int64),) * 2 if self.moves is None else \
            (self.moves.partitions, self.moves.owners)
        n = parts[0].size
        flags = (_STOP * self.stop) | (_EARLY * self.early) | (_BEST * self.best) \
            | (_KEEP * self.keep)
        return np.concatenate([[self.kind, self.step, flags, self.epoch,
                                -1 if self.moves is None else n], *parts]).astype(np.int64)

    @classmethod
    def decode(cls, words: np.ndarray) -> "Reply":
        kind, step, flags, epoch, n = (int(w) for w in words[:5])
        if kind not in (WRITE, GO, END, EVAL, RESTORE) or words.size != 5 + max(n, 0) * 2:
            raise ProtocolError(f"not a scheduler reply: {words[:5].tolist()} "
                                f"({words.size} words)")
        moves = None if n < 0 else Moves(words[5:5 + n].copy(),
                                         words[5 + n:].astype(np.int32))
        return cls(kind, step, bool(flags & _STOP), epoch, moves, bool(flags & _EARLY),
                   bool(flags & _BEST), bool(flags & _KEEP))


# ---- the scheduler's decisions -----------------------------------------------------------
@dataclass(frozen=True)
class AskWrite:
    """Tell every server to write its file of the checkpoint after ``step`` steps: the
    run's periodic one (``keep``), the best parameters (``best``), or both."""

    step: int
    keep: bool = True
    best: bool = False


@dataclass(frozen=True)
class Evaluate:
    """Every worker scores the validation rows with the parameters after ``step``
    steps; the scheduler then calls ``PauseMachine.evaluated``."""

    step: int


@dataclass(frozen=True)
class Publish:
    """Write the manifest of the checkpoint after ``step`` steps and publish it; ``stop``:
    the job stops after it (a stop signal asked for this checkpoint)."""

    step: int
    final: bool
    servers: tuple[dict, ...]
    workers: tuple[dict, ...]
    stop: bool = False
    keep: bool = True
    best: bool = False


@dataclass(frozen=True)
class Verdict:
    """End the pause: every server and the ``workers`` that stopped go on (or ``stop``);
    with ``moves`` everyone takes up ``placement`` (the next one) first, the workers that
    already finished (``parked``) too. On a stop, the parked workers are told that
    training is over."""

    label: int
    stop: bool
    moves: Optional[Moves]
    placement: Placement
    workers: tuple[int, ...]
    parked: tuple[int, ...]
    moved_rows: int = 0
    early: bool = False


Action = AskWrite | Publish | Verdict | Evaluate
# (label, a move was requested, the placement now) -> the moves to make, if any
Planner = Callable[[int, bool, Placement], Optional[Moves]]


@dataclass
class PauseMachine:
    """The scheduler's side of pauses and checkpoints, for ``n_servers`` and
    ``n_workers``, and the job's current ``placement``. ``finished(w)`` (passed to the
    handlers) is worker ``w``'s final entry once it has finished training, else None."""

    n_servers: int
    n_workers: int
    schedule: PauseSchedule
    checkpointing: bool
    planner: Planner
    placement: Placement
    want_checkpoint: bool = False
    want_stop: bool = False
    want_move: bool = False
    paused: dict[int, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    records: dict[int, dict] = field(default_factory=dict)
    wrote: dict[int, dict] = field(default_factory=dict)
    # (label, moves after it, the periodic checkpoint, the best parameters)
    writing: Optional[tuple[int, Optional[Moves], bool, bool]] = None
    evaluating: Optional[int] = None         # the label whose validation is under way
    evaluated_at: int = -1                   # the label of the latest validation
    want_best: bool = False                  # the validation found the best parameters
    early: bool = False                      # the validation ends training

    def request(self, checkpoint: bool = False, stop: bool = False,
                move: bool = False) -> None:
        """Ask for a pause at the workers' next possible step, for these reasons."""
        self.want_checkpoint |= checkpoint or stop
        self.want_stop |= stop
        self.want_move |= move

    @property
    def pending(self) -> bool:
        """A pause has been asked for and not yet held."""
        return self.want_checkpoint or self.want_move

    def server_paused(self, server: int, label: int, workers: list[int],
                      finished: Callable[[int], Optional[dict]]) -> list[Action]:
        self.paused[server] = (label, tuple(workers))
        return self.check(finished)

    def worker_stopped(self, worker: int, record: dict,
                       finished: Callable[[int], Optional[dict]]) -> list[Action]:
        self.records[worker] = record
        return self.check(finished)

    def server_wrote(self, server: int, entry: dict,
                     finished: Callable[[int], Optional[dict]]) -> list[Action]:
        self.wrote[server] = entry
        return self.check(finished)

    def check(self, finished: Callable[[int], Optional[dict]]) -> list[Action]:
        """Complete what can be completed: a pause once every server paused and every
        worker either stopped or finished; a checkpoint once every server wrote."""
        if len(self.wrote) == self.n_servers:
            return self._written(finished)
        if len(self.paused) < self.n_servers or self.writing is not None \
                or self.evaluating is not None:
            return []
        labels = {label for label, _ in self.paused.values()}
        marked = {w for _, ws in self.paused.values() for w in ws}
        if len(labels) != 1 or any(set(ws) != marked for _, ws in self.paused.values()):
            raise ProtocolError(f"servers paused differently: {self.paused}")
        if not marked <= set(self.records):
            return []
        ended = [w for w in range(self.n_workers) if w not in marked]
        if any(finished(w) is None for w in ended):
            return []
        label = labels.pop()
        if self.schedule.validations.due(label) and self.evaluated_at != label:
            self.evaluating = label
            return [Evaluate(label)]
        return self._conclude(label)

    def evaluated(self, best: bool, stop: bool) -> list[Action]:
        """The validation of the pause under way is scored: ``best`` -- keep these
        parameters; ``stop`` -- training ends here (early stopping)."""
        if self.evaluating is None:
            raise ProtocolError("a validation score without a validation under way")
        label, self.evaluating, self.evaluated_at = self.evaluating, None, self.evaluating
        self.want_best, self.early = best, stop
        return self._conclude(label)

    def _conclude(self, label: int) -> list[Action]:
        """The pause at ``label`` is complete (and validated if due): write what is to be
        written, else end it."""
        ending = self.want_stop or self.early
        moves = None if ending else self.planner(label, self.want_move, self.placement)
        self.want_move = False
        keep = self.checkpointing and (self.want_checkpoint or (
            self.schedule.checkpoint_every > 0 and label % self.schedule.checkpoint_every == 0))
        if keep or self.want_best:
            self.writing = (label, moves, keep, self.want_best)
            self.want_best = False
            return [AskWrite(label, keep, self.writing[3])]
        return [self._verdict(label, False, moves)]

    def _written(self, finished: Callable[[int], Optional[dict]]) -> list[Action]:
        """Every server wrote its file: after a pause, or the final checkpoint (servers
        write that one on their own, once every worker finished)."""
        entries = [self.wrote[s] for s in range(self.n_servers)]
        final = entries[0].get("final", False)
        if final:
            workers = [finished(w) for w in range(self.n_workers)]
            if None in workers:
                return []
            self.wrote = {}
            return [Publish(int(entries[0]["step"]), True, tuple(entries), tuple(workers))]
        label, moves, keep, best = self.writing
        ended = [finished(w) for w in range(self.n_workers) if w not in self.records]
        workers = tuple(sorted([*self.records.values(), *ended], key=lambda w: w["index"]))
        stop = self.want_stop
        self.want_checkpoint = False
        self.writing, self.wrote = None, {}
        return [Publish(label, False, tuple(entries), workers, stop, keep, best),
                self._verdict(label, stop, None if stop else moves)]

    def _verdict(self, label: int, stop: bool, moves: Optional[Moves]) -> Verdict:
        workers = tuple(sorted(self.records))
        parked = tuple(w for w in range(self.n_workers) if w not in self.records)
        self.paused, self.records = {}, {}
        early, self.early = self.early, False
        if stop:
            self.want_stop = False
        if moves is None or not len(moves):
            return Verdict(label, stop, None, self.placement, workers, parked, early=early)
        before, self.placement = self.placement, self.placement.after(moves)
        return Verdict(label, stop, moves, self.placement, workers, parked,
                       before.moved_rows(self.placement), early)
