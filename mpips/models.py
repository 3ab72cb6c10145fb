"""CTR models as the workers see them: which table rows a batch needs, and their gradients.

Pure: a model names its tables (``TableSpec``), says which keys of each a batch looks up,
and turns the pulled rows into gradient rows for those keys with the numba kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import Batch
from .errors import ConfigError
from .kernels.fm import fm_grad, fm_logits
from .kernels.lr import lr_grad, lr_logits
from .kernels.sparse import unique_inverse


@dataclass(frozen=True)
class TableSpec:
    """A parameter table: ``rows`` keys, each a float32 row of ``dim``.

    Sparse embedding tables have many rows; a dense tensor is one row of its flat size.
    Columns from ``init_from`` on start as seeded N(0, ``init_std``^2), the rest at zero.
    """

    name: str
    rows: int
    dim: int
    init_std: float = 0.0
    init_from: int = 0


@dataclass
class Lookup:
    """One table's rows for a batch: unique keys, each lookup's index into them, the rows."""

    keys: np.ndarray      # (U,) unique keys, first-appearance order
    inverse: np.ndarray   # batch-shaped index into ``keys``
    rows: np.ndarray      # (U, dim) pulled values, filled by the worker


def lookup(keys: np.ndarray, dim: int) -> Lookup:
    """Deduplicate the keys a batch needs; ``rows`` is left for the pull to fill."""
    uniq, inverse = unique_inverse(np.ascontiguousarray(keys, dtype=np.int64).ravel())
    return Lookup(uniq, inverse.reshape(keys.shape), np.empty((uniq.size, dim), np.float32))


class LogisticRegression:
    """``p = sigmoid(b + sum_f w[key_f] * val_f)`` over hashed sparse features."""

    def __init__(self, table_rows: int) -> None:
        self.tables = (TableSpec("weights", table_rows, 1), TableSpec("bias", 1, 1))

    def lookups(self, batch: Batch) -> dict[str, Lookup]:
        return {"weights": lookup(batch.keys, 1),
                "bias": lookup(np.zeros(1, dtype=np.int64), 1)}

    def gradients(self, batch: Batch, pulled: dict[str, Lookup],
                  scale: float) -> tuple[dict[str, np.ndarray], float]:
        """Gradient rows per table (aligned with each ``Lookup.keys``) times ``scale``,
        and the batch's summed log-loss."""
        w, b = pulled["weights"], pulled["bias"]
        gw, gb, loss = lr_grad(w.rows, float(b.rows[0, 0]), w.inverse, batch.vals,
                               batch.labels, scale)
        return {"weights": gw, "bias": np.array([[gb]], dtype=np.float32)}, loss

    def predict(self, batch: Batch, pulled: dict[str, Lookup]) -> np.ndarray:
        """Click probabilities for the batch."""
        w, b = pulled["weights"], pulled["bias"]
        z = lr_logits(w.rows, float(b.rows[0, 0]), w.inverse, batch.vals)
        return 1.0 / (1.0 + np.exp(-z))


class FactorizationMachine:
    """``p = sigmoid(b + sum_f w_f x_f + sum_{f<g} <v_f, v_g> x_f x_g)``: one table row
    ``[w, v_1..v_k]`` per hashed feature, so one pull serves both terms."""

    def __init__(self, table_rows: int, dim: int, init_std: float) -> None:
        self.tables = (TableSpec("features", table_rows, 1 + dim, init_std, init_from=1),
                       TableSpec("bias", 1, 1))

    def lookups(self, batch: Batch) -> dict[str, Lookup]:
        return {"features": lookup(batch.keys, self.tables[0].dim),
                "bias": lookup(np.zeros(1, dtype=np.int64), 1)}

    def gradients(self, batch: Batch, pulled: dict[str, Lookup],
                  scale: float) -> tuple[dict[str, np.ndarray], float]:
        """As ``LogisticRegression.gradients``."""
        v, b = pulled["features"], pulled["bias"]
        gv, gb, loss = fm_grad(v.rows, float(b.rows[0, 0]), v.inverse, batch.vals,
                               batch.labels, scale)
        return {"features": gv, "bias": np.array([[gb]], dtype=np.float32)}, loss

    def predict(self, batch: Batch, pulled: dict[str, Lookup]) -> np.ndarray:
        v, b = pulled["features"], pulled["bias"]
        z = fm_logits(v.rows, float(b.rows[0, 0]), v.inverse, batch.vals)
        return 1.0 / (1.0 + np.exp(-z))


Model = LogisticRegression | FactorizationMachine


def build_model(name: str, table_rows: int, dim: int = 8, init_std: float = 0.01) -> Model:
    """The model named by ``--model``."""
    if name == "lr":
        return LogisticRegression(table_rows)
    if name == "fm":
        return FactorizationMachine(table_rows, dim, init_std)
    raise ConfigError(f"--model must be lr or fm, not {name!r}")
