"""What a server does with each message it receives, as a state machine. Pure, no MPI.

Events go in (``begin``, ``on_message`` for a push or a mark, ``resume`` after a pause),
actions come out (``Apply``, ``Ack``, ``Pause``, ``Finish``), and a thin loop
(``server.serve``) carries them out with MPI. So the protocol's decisions -- BSP rounds,
SSP checks, pauses for checkpoints and moves, the end -- can be walked step by step in one
process.

- **BSP rounds**: a round applies one push per active worker in worker order; tables that
  are not BSP are applied as each push arrives. A worker's last push removes it from
  later rounds.
- **SSP / ASP**: each push is applied and acknowledged as it arrives; pushes that break
  the SSP bound are counted (an independent check of the workers' clocks).
- **Pauses**: a worker that stops (for a checkpoint or a move) sends a mark instead of a
  push; once every worker still training has marked, the server pauses at the latest
  label until ``resume``.
- **Epochs**: every message names the placement it was routed with; one that names
  another epoch than the server's is refused, so no push can update the wrong rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .clocks import BspRound, Start, SyncPolicy, bound_violated, job_bound
from .errors import ProtocolError
from .message import PushMessage


@dataclass(frozen=True)
class Apply:
    """Sum ``pushes`` in this order and update ``tables`` (None: all); ``step`` is the
    BSP round (1-based, Adam's count), None for the pushes' own steps."""

    pushes: tuple[PushMessage, ...]
    tables: Optional[tuple[int, ...]]
    step: Optional[int]


@dataclass(frozen=True)
class Ack:
    """Tell the pushing workers that their steps are applied."""

    pushes: tuple[PushMessage, ...]


@dataclass(frozen=True)
class Pause:
    """Every worker still training stopped before step ``label`` (``workers`` marked)."""

    label: int
    workers: tuple[int, ...]


@dataclass(frozen=True)
class Finish:
    """Every worker sent its last push; ``steps`` were served."""

    steps: int


Action = Apply | Ack | Pause | Finish


class ServerMachine:
    """One server's protocol state for the tables' ``policies``, from ``start``."""

    def __init__(self, policies: Sequence[SyncPolicy], start: Start, epoch: int) -> None:
        self.rounds, self.bound = job_bound(policies)
        self.in_round = tuple(i for i, p in enumerate(policies) if p.mode == "bsp")
        self.immediate = tuple(i for i, p in enumerate(policies) if p.mode != "bsp")
        self.epoch = epoch
        self.round: BspRound | None = start.round() if self.rounds else None
        self.last_step = {} if self.rounds else start.last_steps()
        self._steps = max(self.last_step.values(), default=-1) + 1
        self.pending: dict[int, PushMessage] = {}
        self.marks: dict[int, int] = {}
        self.paused = False
        self.applied = 0                 # pushes applied
        self.violations = 0              # pushes that broke the SSP bound

    @property
    def active(self) -> frozenset[int]:
        """The workers still training."""
        return self.round.active if self.round is not None else frozenset(self.last_step)

    @property
    def steps(self) -> int:
        """Steps served so far (the label of a final checkpoint)."""
        return self.round.step if self.round is not None else self._steps

    def expected(self, workers: int) -> Optional[list[Optional[int]]]:
        """SSP and ASP: the next step this server expects of each of ``workers`` (None:
        it has finished), that is, the pushes it applied; None under BSP (``steps``)."""
        if self.round is not None:
            return None
        return [self.last_step[w] + 1 if w in self.last_step else None
                for w in range(workers)]

    def begin(self) -> list[Action]:
        """Before the first message: a job whose workers have all finished is done."""
        return [] if self.active else [Finish(self.steps)]

    def on_message(self, msg: PushMessage) -> list[Action]:
        """A push or a mark arrived."""
        if self.paused:
            raise ProtocolError(f"worker {msg.worker} sent step {msg.step} while the server "
                                f"is paused")
        if msg.epoch != self.epoch:
            raise ProtocolError(f"worker {msg.worker} sent step {msg.step} for placement "
                                f"epoch {msg.epoch}; the server is at epoch {self.epoch}: "
                                f"refused, its offsets may name other rows")
        if msg.worker not in self.active:
            raise ProtocolError(f"worker {msg.worker} sent step {msg.step} but has "
                                f"finished or never trained here")
        if msg.mark:
            self.marks[msg.worker] = msg.step
            return self._pause_if_all_marked()
        return self._round(msg) if self.round is not None else self._free(msg)

    def resume(self, epoch: int) -> list[Action]:
        """The pause is over; messages now name placement ``epoch``."""
        if not self.paused:
            raise ProtocolError("resume without a pause")
        self.paused, self.marks, self.epoch = False, {}, epoch
        return []

    def _round(self, msg: PushMessage) -> list[Action]:
        self.round.add(msg.worker, msg.step, msg.last)
        self.pending[msg.worker] = msg
        out: list[Action] = []
        if self.immediate:
            out.append(Apply((msg,), self.immediate, None))
        if not self.round.complete:
            return out
        in_order = tuple(self.pending[w] for w in self.round.order())
        out += [Apply(in_order, self.in_round, self.round.step + 1), Ack(in_order)]
        self.applied += len(in_order)
        self.round, self.pending = self.round.next(), {}
        return out + (self._pause_if_all_marked() if self.active else [Finish(self.steps)])

    def _free(self, msg: PushMessage) -> list[Action]:
        if self.bound is not None and bound_violated(self.last_step, msg.worker, msg.step,
                                                     self.bound):
            self.violations += 1
        out: list[Action] = [Apply((msg,), None, None), Ack((msg,))]
        self.applied += 1
        self._steps = max(self._steps, msg.step + 1)
        self.last_step[msg.worker] = msg.step
        if not msg.last:
            return out
        del self.last_step[msg.worker]
        return out + (self._pause_if_all_marked() if self.active else [Finish(self.steps)])

    def _pause_if_all_marked(self) -> list[Action]:
        """Pause once every worker still training has marked (called again when a
        worker's last push shrinks the set)."""
        if not self.marks or not self.active <= set(self.marks):
            return []
        self.paused = True
        return [Pause(max(self.marks.values()), tuple(sorted(self.marks)))]
