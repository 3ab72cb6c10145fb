"""A worker's steps: which rows each step trains on, from any step on. Pure, no MPI.

A worker trains on its share of the rows, epoch after epoch, each epoch in its seeded
order (``epoch_order``). A job resumed with a different number of workers first shares
out the batches its workers had left in their epoch (``carry``: row ranges, done first),
then goes on with whole epochs of the new shares. Step numbers go on across a resume
(``base``), so that BSP rounds and Adam's step count continue.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from ..errors import CheckpointError
from . import epoch_order, n_batches, share, shuffle_block

if TYPE_CHECKING:
    from ..config import TrainConfig

Rows = tuple[int, int]


@dataclass(frozen=True)
class Schedule:
    """Steps ``base``.. of one worker: ``carry`` batches, then epochs ``first_epoch``.. of
    its own ``rows``."""

    rows: Rows
    batch_size: int
    epochs: int
    seed: int
    worker: int
    shuffle: bool = True
    base: int = 0
    carry: tuple[Rows, ...] = ()
    first_epoch: int = 0

    @classmethod
    def of(cls, cfg: "TrainConfig", train_range: Rows, worker: int, n_workers: int
           ) -> "Schedule":
        """A fresh schedule of worker ``worker`` of ``n_workers`` over the training rows."""
        return cls(share(*train_range, worker, n_workers), cfg.batch_size, cfg.epochs,
                   cfg.seed, worker, cfg.shuffle)

    @property
    def steps_per_epoch(self) -> int:
        return n_batches(self.rows[1] - self.rows[0], self.batch_size)

    @property
    def end(self) -> int:
        """The number of the step after the last."""
        return self.base + len(self.carry) \
            + self.steps_per_epoch * (self.epochs - self.first_epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The batch order of an epoch of the worker's own rows."""
        n = self.steps_per_epoch
        if not self.shuffle:
            return np.arange(n)
        return epoch_order(n, epoch, self.seed, self.worker, shuffle_block(self.batch_size))

    def batch_rows(self, b: int) -> Rows:
        """Rows of batch ``b`` of the worker's own rows."""
        lo = self.rows[0] + b * self.batch_size
        return lo, min(lo + self.batch_size, self.rows[1])

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, index in its order) of a step past the carry."""
        return divmod(step - self.base - len(self.carry), self.steps_per_epoch) \
            if self.steps_per_epoch else (self.epochs, 0)

    def remaining(self, step: int) -> tuple[int, list[Rows]]:
        """The epoch ``step`` is in, and the batches of it left from ``step`` on (the
        carry belongs to the epoch before ``first_epoch``)."""
        i = step - self.base
        if i < len(self.carry):
            return self.first_epoch - 1, list(self.carry[i:])
        if step >= self.end:
            return self.epochs, []
        e, b = self.position(step)
        epoch = self.first_epoch + e
        return epoch, [self.batch_rows(int(k)) for k in self.order(epoch)[b:]]

    def rows_left(self, step: int) -> int:
        """Rows this worker trains on from ``step`` to the end."""
        epoch, batches = self.remaining(step)
        whole = max(0, self.epochs - epoch - 1) if step - self.base >= len(self.carry) \
            else self.epochs - self.first_epoch
        return sum(hi - lo for lo, hi in batches) + whole * (self.rows[1] - self.rows[0])

    def entry(self) -> dict:
        """What a checkpoint records of the schedule (beside the worker's step)."""
        return {"base": self.base, "carry": [list(c) for c in self.carry],
                "first_epoch": self.first_epoch}

    def resumed(self, entry: Optional[dict]) -> "Schedule":
        """This schedule as a checkpoint's worker ``entry`` left it."""
        if entry is None:
            return self
        return replace(self, base=int(entry.get("base", 0)),
                       carry=tuple((int(lo), int(hi)) for lo, hi in entry.get("carry", [])),
                       first_epoch=int(entry.get("first_epoch", 0)))


def regroup(entries: Sequence[dict], old: Sequence[Schedule], new: Sequence[Schedule]
            ) -> list[dict]:
    """Worker entries for ``new`` workers continuing the ``old`` ones (whose checkpoint
    entries are ``entries``): the batches left in the current epoch are shared out in
    worker order as carries, then the new workers go on with the next epoch of their own
    shares. The old workers still training must all be in the same epoch."""
    left: list[Rows] = []
    epochs = set()
    for entry, sched in zip(entries, old):
        if not entry["finished"]:
            epoch, batches = sched.remaining(int(entry["step"]))
            epochs.add(epoch)
            left += batches
    if len(epochs) > 1:
        raise CheckpointError(f"the checkpoint's workers stand in different epochs "
                              f"({', '.join(map(str, sorted(epochs)))}): resume it with "
                              f"{len(entries)} workers")
    epoch = epochs.pop() if epochs else old[0].epochs - 1
    base = max(int(e["step"]) for e in entries)
    samples = sum(int(e["samples"]) for e in entries)
    loss = sum(float(e["loss"]) for e in entries)
    out = []
    for j, sched in enumerate(new):
        lo, hi = share(0, len(left), j, len(new))
        mine = replace(sched, base=base, carry=tuple(left[lo:hi]), first_epoch=epoch + 1)
        out.append({"index": j, "step": base, "finished": mine.end == base,
                    "epoch": epoch, "samples": samples if j == 0 else 0,
                    "loss": loss if j == 0 else 0.0, "rng": None, **mine.entry()})
    return out


def schedules(cfg: "TrainConfig", train_range: Rows, n_workers: int) -> list[Schedule]:
    """Fresh schedules of ``n_workers`` workers over the training rows."""
    return [Schedule.of(cfg, train_range, w, n_workers) for w in range(n_workers)]


def worker_entries(entries: Sequence[dict], cfg: "TrainConfig", train_range: Rows,
                   n_workers: int) -> list[dict]:
    """A checkpoint's worker entries for a job of ``n_workers`` workers: as saved, or
    regrouped when the number of workers changed."""
    if len(entries) == n_workers:
        return list(entries)
    if any("pool" in e for e in entries):
        raise CheckpointError(f"its {len(entries)} workers shared out their batches "
                              f"(--balance): resume it with {len(entries)} workers")
    old = [s.resumed(e) for s, e in zip(schedules(cfg, train_range, len(entries)), entries)]
    return regroup(entries, old, schedules(cfg, train_range, n_workers))
