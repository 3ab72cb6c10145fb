"""A worker's steps: which rows each step trains on, from any step on. Pure, no MPI.

A worker trains on its share of the rows, epoch after epoch, each epoch in its seeded
order (``epoch_order``). A job resumed with a different number of workers (after a
worker died, say) first shares out the batches its workers had left up to the end of the
furthest one's epoch (``carry``: row ranges, done first), then goes on with whole epochs
of the new shares; balanced workers share out every batch left in their pool. Step numbers go on across a resume
(``base``), so that BSP rounds and Adam's step count continue.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

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

    def through(self, step: int, epoch: int) -> list[Rows]:
        """The batches from ``step`` to the end of epoch ``epoch``."""
        first, batches = self.remaining(step)
        for e in range(max(first + 1, self.first_epoch), min(epoch + 1, self.epochs)):
            batches += [self.batch_rows(int(k)) for k in self.order(e)]
        return batches

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


def entry_at(sched: Schedule, start: Optional[dict], index: int, step: int) -> dict:
    """The checkpoint entry, at ``step`` (or its last step, if sooner), of worker ``index``
    that died, as its schedule ``sched`` (resumed from ``start``, None: fresh) says: the
    samples of its steps since ``start`` counted; its loss as it stood at ``start`` (the
    loss of its steps since died with it)."""
    begin = int(start["step"]) if start else 0
    at = min(step, sched.end)
    return {"index": index, "step": at, "finished": at == sched.end,
            "epoch": sched.remaining(at)[0], "rng": None,
            "samples": (int(start["samples"]) if start else 0)
            + sched.rows_left(begin) - sched.rows_left(at),
            "loss": float(start["loss"]) if start else 0.0, **sched.entry()}


def regroup(entries: Sequence[dict], old: Sequence[Schedule], new: Sequence[Schedule]
            ) -> list[dict]:
    """Worker entries for ``new`` workers continuing the ``old`` ones (whose checkpoint
    entries are ``entries``): the batches left up to the end of the furthest old worker's
    epoch are shared out in worker order as carries, then the new workers go on with the
    next epoch of their own shares."""
    busy = [(e, s) for e, s in zip(entries, old) if not e["finished"]]
    epoch = max((s.remaining(int(e["step"]))[0] for e, s in busy), default=old[0].epochs - 1)
    left = [rows for e, s in busy for rows in s.through(int(e["step"]), epoch)]
    out = []
    for sched, entry, carry in zip(new, shared_out(entries, epoch, len(new)),
                                   deal(left, len(new))):
        mine = replace(sched, base=entry["step"], carry=tuple(carry), first_epoch=epoch + 1)
        out.append(dict(entry, finished=mine.end == entry["step"], **mine.entry()))
    return out


def regroup_pool(entries: Sequence[dict], old: Sequence[Schedule],
                 new: Sequence[Schedule]) -> list[dict]:
    """Balanced workers' entries (``pool``: the counter of each owner's batches) for
    ``new`` workers: every batch left, taken or not, is shared out as carries, and the
    new pool starts empty (each counter at its owner's end)."""
    left = [tuple(rows) for e in entries for rows in e.get("carry", [])]
    for e, s in zip(entries, old):
        first, skip = divmod(int(e["pool"]), max(s.steps_per_epoch, 1))
        for epoch in range(first, s.epochs):
            order = s.order(epoch)[skip if epoch == first else 0:]
            left += [s.batch_rows(int(k)) for k in order]
    epoch = min((int(e["epoch"]) for e in entries if not e["finished"]),
                default=old[0].epochs)
    done = all(e["finished"] for e in entries)
    return [dict(entry, carry=[list(r) for r in carry], pool=s.steps_per_epoch * s.epochs,
                 finished=done and not carry)
            for s, entry, carry in zip(new, shared_out(entries, epoch, len(new)),
                                       deal(left, len(new)))]


def shared_out(entries: Sequence[dict], epoch: int, n: int) -> list[dict]:
    """The common part of ``n`` regrouped entries: every one at the furthest old step
    (step numbers go on), the first with all the samples and loss so far."""
    base = max(int(e["step"]) for e in entries)
    samples = sum(int(e["samples"]) for e in entries)
    loss = sum(float(e["loss"]) for e in entries)
    return [{"index": j, "step": base, "epoch": epoch, "samples": samples if j == 0 else 0,
             "loss": loss if j == 0 else 0.0, "rng": None} for j in range(n)]


def deal(items: Sequence[Rows], n: int) -> list[Sequence[Rows]]:
    """``items`` cut into ``n`` runs in order, as even as can be."""
    return [items[slice(*share(0, len(items), j, n))] for j in range(n)]


def schedules(cfg: "TrainConfig", train_range: Rows, n_workers: int) -> list[Schedule]:
    """Fresh schedules of ``n_workers`` workers over the training rows."""
    return [Schedule.of(cfg, train_range, w, n_workers) for w in range(n_workers)]


def worker_entries(entries: Sequence[dict], cfg: "TrainConfig", train_range: Rows,
                   n_workers: int) -> list[dict]:
    """A checkpoint's worker entries for a job of ``n_workers`` workers: as saved, or
    regrouped when the number of workers changed."""
    if len(entries) == n_workers:
        return list(entries)
    old = [s.resumed(e) for s, e in zip(schedules(cfg, train_range, len(entries)), entries)]
    again = regroup_pool if any("pool" in e for e in entries) else regroup
    return again(entries, old, schedules(cfg, train_range, n_workers))
