"""When a server may apply a step: the bulk-synchronous (BSP) clock. Pure, no MPI.

A round collects exactly one push for step ``t`` from every active worker, in any arrival
order; it is applied in worker order. A worker's last push removes it from later rounds,
so workers with fewer batches finish early without holding the others up.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import MpipsError


class ProtocolError(MpipsError):
    """A push that the clock does not allow (a bug or a mixed-up job, never user input)."""


@dataclass
class BspRound:
    """Step ``step``'s pushes from the ``active`` workers."""

    step: int
    active: frozenset[int]
    arrived: dict[int, bool] = field(default_factory=dict)   # worker -> was its last push

    def add(self, worker: int, step: int, last: bool) -> None:
        """Record a push; refuses one from an inactive worker, a second one, or a wrong step."""
        if worker not in self.active or worker in self.arrived or step != self.step:
            raise ProtocolError(f"push from worker {worker} for step {step} is not expected "
                                f"while collecting step {self.step}")
        self.arrived[worker] = last

    @property
    def complete(self) -> bool:
        return len(self.arrived) == len(self.active)

    def order(self) -> list[int]:
        """The workers in the fixed order their rows are summed in."""
        return sorted(self.arrived)

    def next(self) -> "BspRound":
        """The following round: every active worker that did not send its last push."""
        return BspRound(self.step + 1,
                        frozenset(w for w in self.active if not self.arrived.get(w, False)))
