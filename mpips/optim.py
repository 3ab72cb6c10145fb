"""Optimisers as the servers see them: hyper-parameters, state beside the rows, row updates.

Pure: a server holds ``rows`` (the parameters, in its RMA window) and one state array per
name in ``state_slots`` of the same shape, so state moves and is checkpointed with its rows.
A table's leading ``linear`` columns (FM's and DeepFM's first-order weights) may learn at
their own rate (``linear_lr``), as wide-and-deep trainers give the wide part its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .kernels.optim import adagrad_rows, adam_rows, ftrl_rows, sgd_rows

OPTIMIZERS = ("sgd", "adagrad", "adam", "ftrl")
_SLOTS = {"sgd": (), "adagrad": ("accum",), "adam": ("m", "v"), "ftrl": ("z", "n")}


@dataclass(frozen=True)
class Optimizer:
    """One optimiser configuration; ``apply`` updates the touched rows in place."""

    name: str = "adagrad"
    lr: float = 0.05            # FTRL's alpha
    linear_lr: float | None = None   # first-order weights' rate (None: ``lr``)
    l2: float = 0.0             # weight decay; FTRL's lambda2
    l1: float = 0.0             # FTRL's lambda1
    eps: float = 1e-10          # Adagrad's, as in PyTorch (Adam uses adam_eps)
    initial_accumulator: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    ftrl_beta: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, "
                              f"not {self.name!r}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.linear_lr is not None and not self.linear_lr > 0:
            raise ConfigError(f"--linear-lr must be > 0, got {self.linear_lr}")

    @property
    def state_slots(self) -> tuple[str, ...]:
        return _SLOTS[self.name]

    def new_state(self, shape: tuple[int, int], used: int | None = None
                  ) -> dict[str, np.ndarray]:
        """State arrays for a shard of ``shape``: in its first ``used`` rows (default all)
        Adagrad's accumulator starts at ``initial_accumulator``, everything else at zero.
        The rest is spare room for rows that arrive with their own state; it stays zero
        pages, which cost no memory until written."""
        out = {s: np.zeros(shape, dtype=np.float32) for s in self.state_slots}
        if "accum" in out and self.initial_accumulator:
            out["accum"][:shape[0] if used is None else used] = self.initial_accumulator
        return out

    def rates(self, dim: int, linear: int = 0) -> np.ndarray:
        """Per column of a table ``dim`` wide, its learning rate (FTRL's alpha): the
        first ``linear`` columns at ``linear_lr`` (when set), the others at ``lr``."""
        out = np.full(dim, self.lr)
        if self.linear_lr is not None:
            out[:linear] = self.linear_lr
        return out

    def apply(self, rows: np.ndarray, state: dict[str, np.ndarray], offsets: np.ndarray,
              grads: np.ndarray, step: int = 1, rates: np.ndarray | None = None) -> None:
        """Update ``rows[offsets]`` (unique offsets) with the summed gradient rows;
        ``step`` (1-based) is the table's update count, for Adam's bias correction;
        ``rates``: per column, as ``rates`` gives them (default: ``lr`` for all)."""
        lr = self.rates(rows.shape[1]) if rates is None else rates
        if self.name == "sgd":
            sgd_rows(rows, offsets, grads, lr, self.l2)
        elif self.name == "adagrad":
            adagrad_rows(rows, state["accum"], offsets, grads, lr, self.l2, self.eps)
        elif self.name == "adam":
            adam_rows(rows, state["m"], state["v"], offsets, grads, lr, self.l2,
                      self.beta1, self.beta2, self.adam_eps, step)
        else:
            ftrl_rows(rows, state["z"], state["n"], offsets, grads, lr, self.ftrl_beta,
                      self.l1, self.l2)
