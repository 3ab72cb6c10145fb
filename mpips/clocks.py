"""Consistency: when a server may apply and a worker may start a step. Pure, no MPI.

BSP: a round collects exactly one push for step ``t`` from every active worker, in any
arrival order, and is applied in worker order. A worker's last push removes it from later
rounds, so workers with fewer batches finish early without holding the others up.
SSP: a worker may start step ``t`` once every other worker has completed ``t - S`` steps;
ASP: it never waits for the others. Staleness is measured on the servers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from .errors import ProtocolError

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
        """Every active worker's push for this step has arrived."""
        return len(self.arrived) == len(self.active)

    def order(self) -> list[int]:
        """The workers in the fixed order their rows are summed in."""
        return sorted(self.arrived)

    def next(self) -> "BspRound":
        """The following round: every active worker that did not send its last push."""
        return BspRound(self.step + 1,
                        frozenset(w for w in self.active if not self.arrived.get(w, False)))


@dataclass(frozen=True)
class Start:
    """Where the workers (re)start: each one's completed steps, and whether it finished."""

    steps: tuple[int, ...]
    finished: tuple[bool, ...]

    @classmethod
    def fresh(cls, n_workers: int) -> "Start":
        return cls((0,) * n_workers, (False,) * n_workers)

    def round(self) -> BspRound:
        """The first BSP round: the workers still training all stand at the same step."""
        active = frozenset(w for w, done in enumerate(self.finished) if not done)
        steps = {self.steps[w] for w in active}
        if len(steps) > 1:
            raise ProtocolError(f"BSP workers resume at different steps: {sorted(steps)}")
        return BspRound(steps.pop() if steps else 0, active)

    def last_steps(self) -> dict[int, int]:
        """SSP and ASP: the last step applied of every worker still training."""
        return {w: s - 1 for w, (s, done) in enumerate(zip(self.steps, self.finished))
                if not done}


SYNC_MODES = ("bsp", "ssp", "async")
DONE = 1 << 62        # the clock of a worker that has finished: it never holds others back


@dataclass(frozen=True)
class SyncPolicy:
    """How one table is kept consistent: ``bsp``, ``ssp`` with a staleness bound, ``async``."""

    mode: str = "bsp"
    staleness: int = 3

    @property
    def bound(self) -> Optional[int]:
        """How many steps a worker may run ahead of the slowest (None: unbounded)."""
        return {"bsp": 0, "ssp": self.staleness, "async": None}[self.mode]


def job_bound(policies: Iterable[SyncPolicy]) -> tuple[bool, Optional[int]]:
    """(rounds, bound) for a job whose tables follow ``policies``. Workers pace themselves
    by the strictest table: any BSP table makes every step a round that all workers wait
    for (the other tables are then applied as pushes arrive, without the fixed order);
    otherwise workers wait for the tightest SSP bound, or, all tables ASP, not at all."""
    policies = list(policies)
    if any(p.mode == "bsp" for p in policies):
        return True, 0
    bounds = [p.bound for p in policies if p.bound is not None]
    return False, min(bounds) if bounds else None


def may_start(clocks: np.ndarray, me: int, step: int, bound: Optional[int]) -> bool:
    """SSP: may worker ``me`` start ``step`` (0-based) when the workers have completed
    ``clocks`` steps? Every other worker must have completed at least ``step - bound``."""
    if bound is None:
        return True
    others = np.delete(clocks, me)
    return bool(others.size == 0 or others.min() >= step - bound)


def bound_violated(last_step: dict[int, int], worker: int, step: int, bound: int) -> bool:
    """The server's independent check of SSP: a push for ``step`` is legal only if every
    other active worker's push for ``step - bound - 1`` has already arrived here."""
    return any(s < step - bound - 1 for w, s in last_step.items() if w != worker)


class StalenessLog:
    """Per table, how many updates the rows a push was computed from had missed."""

    BINS = 64        # the last bin counts everything from 63 up

    def __init__(self, tables: Sequence[str]) -> None:
        self.tables = list(tables)
        self.hist = np.zeros((len(self.tables), self.BINS), dtype=np.int64)

    def record(self, table: int, missed: int) -> None:
        """One shard update of ``table`` from rows that had missed ``missed`` updates."""
        self.hist[table, min(max(missed, 0), self.BINS - 1)] += 1

    @staticmethod
    def summary(hist: np.ndarray) -> dict:
        """Mean and max of one histogram (max is a lower bound if the last bin is used)."""
        n = int(hist.sum())
        seen = np.flatnonzero(hist)
        return {"updates": n, "mean": float(hist @ np.arange(hist.size) / n) if n else 0.0,
                "max": int(seen[-1]) if seen.size else 0, "hist": hist.tolist()}


def effective_sync(policies: dict[str, SyncPolicy]) -> dict:
    """What a job's tables really get, for the metrics: each table's own setting, and how
    workers are paced (``rounds``, ``bound``)."""
    rounds, bound = job_bound(policies.values())
    pacing = "bsp" if rounds else "async" if bound is None else f"ssp({bound})"
    return {"pacing": pacing,
            "tables": {name: p.mode if p.mode != "ssp" else f"ssp({p.staleness})"
                       for name, p in policies.items()}}
