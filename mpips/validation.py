"""Validation and early stopping: when a job scores its validation rows, and what it does
with the scores. Pure, no MPI.

A job validates at the end of every epoch but the last and every ``--eval-every`` steps
(``EvalSchedule``), each time at a pause where every worker has stopped and every push is
applied, and once more when training ends. ``EarlyStopping`` keeps the best validation
AUC and its step; with ``--early-stop P`` it says to stop after P validations in a row
without a better AUC. The job keeps the best parameters as the checkpoint ``best`` and
tests those.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from .data.schedule import schedules

if TYPE_CHECKING:
    from .config import TrainConfig


@dataclass(frozen=True)
class EvalSchedule:
    """Steps before which the job validates: multiples of ``every`` and of
    ``epoch_steps`` (the steps of one epoch), short of ``end`` (the step after the
    last: training's end is validated after it, not at a pause)."""

    every: int = 0
    epoch_steps: int = 0
    end: int = 0

    def due(self, step: int) -> bool:
        if not 0 < step < self.end:
            return False
        return any(n > 0 and step % n == 0 for n in (self.every, self.epoch_steps))

    @property
    def any(self) -> bool:
        return self.end > 0 and (self.every > 0 or self.epoch_steps > 0)


def eval_schedule(cfg: "TrainConfig", train_range: tuple[int, int], n_workers: int
                  ) -> EvalSchedule:
    """When a job validates: its epochs are as long as the longest worker's share
    (``--eval-every`` adds steps); a job without validation rows never does."""
    if not cfg.validating:
        return EvalSchedule()
    epoch = max(s.steps_per_epoch for s in schedules(cfg, train_range, n_workers))
    return EvalSchedule(cfg.eval_every, epoch, epoch * cfg.epochs)


@dataclass(frozen=True)
class Decision:
    """What one validation means: ``best`` -- the best so far (keep these parameters);
    ``stop`` -- patience is exhausted."""

    best: bool
    stop: bool


@dataclass
class EarlyStopping:
    """The validation history of a job; ``patience`` 0 never stops."""

    patience: int = 0
    best_auc: Optional[float] = None
    best_step: int = -1
    since_best: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        """The step of the latest validation (-1: none yet)."""
        return self.history[-1][0] if self.history else -1

    @property
    def stopped(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def observe(self, step: int, auc: float) -> Decision:
        """A validation AUC after ``step`` steps. Only a strictly higher AUC is better (a
        NaN never is), so ties keep the earlier parameters."""
        self.history.append((step, auc))
        better = not math.isnan(auc) and (self.best_auc is None or auc > self.best_auc)
        if better:
            self.best_auc, self.best_step, self.since_best = auc, step, 0
        else:
            self.since_best += 1
        return Decision(better, self.stopped)

    def doc(self) -> dict:
        """As JSON (kept in checkpoint manifests, so a resumed job goes on counting)."""
        return {"best_auc": self.best_auc, "best_step": self.best_step,
                "since_best": self.since_best,
                "history": [[s, None if math.isnan(a) else a] for s, a in self.history]}

    @classmethod
    def of_doc(cls, patience: int, doc: Optional[dict]) -> "EarlyStopping":
        """``doc``'s inverse (None: a fresh history)."""
        if not doc:
            return cls(patience)
        return cls(patience, doc["best_auc"], int(doc["best_step"]), int(doc["since_best"]),
                   [(int(s), float("nan") if a is None else float(a))
                    for s, a in doc["history"]])
