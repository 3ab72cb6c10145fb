"""Measured load: how busy each server is, and how much work each partition brings. Pure.

A server counts the time it spends receiving and decoding pushes, summing and applying
them, and acknowledging (``BusyMeter``); the ``--slow-server`` aid's sleep counts too, as
it stands for a slower machine. Workers count, on every 8th step, the values
(rows x row width) each partition gives them to pull and push (``PartitionMeter``): a
pushed row is one they pulled, so one count serves both. Both report to the scheduler,
whose ``LoadStats`` keeps each server's busy share per report and a decaying load per
partition, for the progress line, the metrics and the balancer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .kernels.sparse import add_partition_counts
from .ring import TableLayout

LOAD_SECONDS = 0.5        # how often servers and workers report their load
SAMPLE_EVERY = 8          # workers count the partitions of every 8th step (a count of
                          # a 2048-row FM batch takes ~0.6 ms: ~0.75 % of the steps' time)
DECAY = 0.5               # weight of the past in the partitions' load at each report
MIN_STEPS = 8             # a report over fewer steps tells too little to be used


@dataclass(frozen=True)
class ServerLoad:
    """One server's report: seconds busy out of ``wall`` seconds since its last report,
    rows applied, steps acknowledged, and the placement epoch it served under. The
    ``final`` report, when the server stops serving, covers the whole job."""

    busy: float
    wall: float
    rows: int
    steps: int
    epoch: int
    final: bool = False

    def encode(self) -> np.ndarray:
        return np.array([self.busy, self.wall, self.rows, self.steps, self.epoch,
                         self.final], dtype=np.float64)

    @classmethod
    def decode(cls, words: np.ndarray) -> "ServerLoad":
        busy, wall, rows, steps, epoch, final = words.tolist()
        return cls(busy, wall, int(rows), int(steps), int(epoch), bool(final))

    @property
    def share(self) -> float:
        return self.busy / self.wall if self.wall > 0 else 0.0


class BusyMeter:
    """A server's busy time and work, since the start and since its last report."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.started = self._last = clock()
        self.total_busy = self._busy = 0.0
        self.total_rows = self._rows = 0
        self.total_steps = self._steps = 0

    def add(self, seconds: float, rows: int = 0, steps: int = 0) -> None:
        self._busy += seconds
        self._rows += rows
        self._steps += steps

    def due(self) -> bool:
        """Time for the next report?"""
        return self.clock() - self._last >= LOAD_SECONDS

    def report(self, epoch: int) -> ServerLoad:
        """The load since the last report (and start counting anew)."""
        now = self.clock()
        out = ServerLoad(self._busy, now - self._last, self._rows, self._steps, epoch)
        self.total_busy += self._busy
        self.total_rows += self._rows
        self.total_steps += self._steps
        self._busy, self._rows, self._steps, self._last = 0.0, 0, 0, now
        return out

    def restart(self) -> None:
        """After a pause: the next report covers only the time from now (the current
        interval still counts in the totals)."""
        self.report(-1)

    def final(self, epoch: int) -> ServerLoad:
        """The report over the whole job, from the meter's start."""
        return ServerLoad(self.total_busy + self._busy, self.clock() - self.started,
                          self.total_rows + self._rows, self.total_steps + self._steps,
                          epoch, final=True)


class PartitionMeter:
    """A worker's count of the values each partition gave it, on every
    ``SAMPLE_EVERY``-th step (scaled up by it)."""

    def __init__(self, partitions: int) -> None:
        self.counts = np.zeros(partitions, dtype=np.float64)
        self._step = 0
        self._last = time.perf_counter()

    def count(self, layouts: Sequence[TableLayout], dims: Sequence[int],
              keys: Sequence[np.ndarray]) -> None:
        """One step's unique keys per table (skipped but on sampled steps)."""
        self._step += 1
        if self._step % SAMPLE_EVERY:
            return
        for layout, dim, k in zip(layouts, dims, keys):
            add_partition_counts(self.counts, k, layout.salt, self.counts.size,
                                 float(dim * SAMPLE_EVERY))

    def due(self) -> bool:
        return time.perf_counter() - self._last >= LOAD_SECONDS

    def take(self) -> np.ndarray:
        """The counts since the last take (float32, and start counting anew)."""
        out = self.counts.astype(np.float32)
        self.counts[:] = 0.0
        self._last = time.perf_counter()
        return out


class LoadStats:
    """The scheduler's view: every server's latest busy share, busy seconds per step and
    rows per step (reports of other epochs are left out: they straddle a move), and each
    partition's load."""

    def __init__(self, n_servers: int, partitions: int) -> None:
        self.shares = np.zeros(n_servers)
        self.per_step = np.zeros(n_servers)             # busy seconds per step
        self.rows_per_step = np.zeros(n_servers)
        self.fresh = np.zeros(n_servers, dtype=bool)    # reported since the last round
        self.partition_load = np.zeros(partitions)
        self.epoch = 0

    def server(self, s: int, load: ServerLoad) -> None:
        """A server's report; one of another epoch, or over too few steps to tell (the
        first after the start, when workers are still warming up), is left out."""
        if load.epoch != self.epoch or load.steps < MIN_STEPS:
            return
        self.shares[s] = load.share
        self.per_step[s] = load.busy / load.steps if load.steps else 0.0
        self.rows_per_step[s] = load.rows / load.steps if load.steps else 0.0
        self.fresh[s] = True

    def partitions(self, counts: np.ndarray) -> None:
        """A worker's counts: decay the past once per round of reports, add these."""
        self.partition_load += counts

    def round_complete(self, active: Sequence[int]) -> bool:
        """Has every active server reported since the last round? Starts a new one."""
        if not self.fresh[list(active)].all():
            return False
        self.fresh[:] = False
        self.partition_load *= DECAY
        return True

    def placement_changed(self, epoch: int) -> None:
        """After a pause: a round counts only reports made after it (the shares shown
        stay until they are replaced)."""
        self.epoch = epoch
        self.fresh[:] = False
