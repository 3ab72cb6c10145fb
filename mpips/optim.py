"""Optimisers as the servers see them: hyper-parameters, state beside the rows, row updates.

Pure: a server holds ``rows`` (the parameters, in its RMA window) and one state array per
name in ``state_slots`` of the same shape, so state moves and is checkpointed with its rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .kernels.optim import adagrad_rows, sgd_rows

OPTIMIZERS = ("sgd", "adagrad")


@dataclass(frozen=True)
class Optimizer:
    """One optimiser configuration; ``apply`` updates the touched rows in place."""

    name: str = "adagrad"
    lr: float = 0.05
    l2: float = 0.0
    eps: float = 1e-10          # Adagrad, as in PyTorch
    initial_accumulator: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, "
                              f"not {self.name!r}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")

    @property
    def state_slots(self) -> tuple[str, ...]:
        return ("accum",) if self.name == "adagrad" else ()

    def new_state(self, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Zeroed (or initial-valued) state arrays for a shard of ``shape``."""
        return {s: np.full(shape, self.initial_accumulator, dtype=np.float32)
                for s in self.state_slots}

    def apply(self, rows: np.ndarray, state: dict[str, np.ndarray], offsets: np.ndarray,
              grads: np.ndarray) -> None:
        """Update ``rows[offsets]`` (unique offsets) with the summed gradient rows."""
        if self.name == "sgd":
            sgd_rows(rows, offsets, grads, self.lr, self.l2)
        else:
            adagrad_rows(rows, state["accum"], offsets, grads, self.lr, self.l2, self.eps)
