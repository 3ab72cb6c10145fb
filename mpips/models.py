"""CTR models as the workers see them: which table rows a batch needs, and their gradients.

Pure: a model names its tables (``TableSpec``), says which keys of each a batch looks up,
and turns the pulled rows into gradient rows for those keys with the numba kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import Batch
from .errors import ConfigError
from .kernels.fm import add_field_grads, field_inputs, fm_backward, fm_grad, fm_logits
from .kernels.lr import logloss_terms
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


class OneSparseTable:
    """A model with one sparse table (``sparse``) and a bias, whose numba kernels give the
    logits (``logits``) and, in one pass, the gradient rows and loss (``grad``)."""

    sparse: str
    tables: tuple[TableSpec, ...]

    @staticmethod
    def logits(rows: np.ndarray, bias: float, inverse: np.ndarray,
               vals: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def grad(rows: np.ndarray, bias: float, inverse: np.ndarray, vals: np.ndarray,
             labels: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
        raise NotImplementedError

    def lookups(self, batch: Batch) -> dict[str, Lookup]:
        """The unique keys of each table that ``batch`` needs."""
        return {self.sparse: lookup(batch.keys, self.tables[0].dim),
                "bias": lookup(np.zeros(1, dtype=np.int64), 1)}

    def gradients(self, batch: Batch, pulled: dict[str, Lookup],
                  scale: float) -> tuple[dict[str, np.ndarray], float]:
        """Gradient rows per table (aligned with each ``Lookup.keys``) times ``scale``,
        and the batch's summed log-loss."""
        v, b = pulled[self.sparse], pulled["bias"]
        gv, gb, loss = self.grad(v.rows, float(b.rows[0, 0]), v.inverse, batch.vals,
                                 batch.labels, scale)
        return {self.sparse: gv, "bias": np.array([[gb]], dtype=np.float32)}, loss

    def predict(self, batch: Batch, pulled: dict[str, Lookup]) -> np.ndarray:
        """Click probabilities for the batch."""
        v, b = pulled[self.sparse], pulled["bias"]
        z = self.logits(v.rows, float(b.rows[0, 0]), v.inverse, batch.vals)
        return 1.0 / (1.0 + np.exp(-z))


class LogisticRegression(OneSparseTable):
    """``p = sigmoid(b + sum_f w[key_f] * val_f)`` over hashed sparse features."""

    sparse = "weights"
    logits = staticmethod(lr_logits)
    grad = staticmethod(lr_grad)

    def __init__(self, table_rows: int) -> None:
        self.tables = (TableSpec("weights", table_rows, 1), TableSpec("bias", 1, 1))


class FactorizationMachine(OneSparseTable):
    """``p = sigmoid(b + sum_f w_f x_f + sum_{f<g} <v_f, v_g> x_f x_g)``: one table row
    ``[w, v_1..v_k]`` per hashed feature, so one pull serves both terms."""

    sparse = "features"
    logits = staticmethod(fm_logits)
    grad = staticmethod(fm_grad)

    def __init__(self, table_rows: int, dim: int, init_std: float) -> None:
        self.tables = (TableSpec("features", table_rows, 1 + dim, init_std, init_from=1),
                       TableSpec("bias", 1, 1))


class DeepFM(FactorizationMachine):
    """FM plus an MLP tower (ReLU hidden layers) over the fields' scaled embeddings, whose
    outputs add up in one logit (Guo et al. 2017). Each MLP layer's weights and biases are
    dense tables (one row each) on the servers; weights start Glorot-normal."""

    def __init__(self, table_rows: int, dim: int, init_std: float, fields: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__(table_rows, dim, init_std)
        sizes = [fields * dim, *hidden, 1]
        self.layers = list(zip(sizes[:-1], sizes[1:]))
        dense = []
        for i, (a, b) in enumerate(self.layers):
            dense += [TableSpec(f"mlp{i}.w", 1, a * b, float(np.sqrt(2.0 / (a + b)))),
                      TableSpec(f"mlp{i}.b", 1, b)]
        self.tables = self.tables + tuple(dense)

    def lookups(self, batch: Batch) -> dict[str, Lookup]:
        out = super().lookups(batch)
        for t in self.tables[2:]:
            out[t.name] = lookup(np.zeros(1, dtype=np.int64), t.dim)
        return out

    def _weights(self, pulled: dict[str, Lookup]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(pulled[f"mlp{i}.w"].rows.reshape(a, b).astype(np.float64),
                 pulled[f"mlp{i}.b"].rows[0].astype(np.float64))
                for i, (a, b) in enumerate(self.layers)]

    def _forward(self, batch: Batch, pulled: dict[str, Lookup]
                 ) -> tuple[np.ndarray, list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
        """Logits, the MLP's layer inputs, and its weights."""
        v, b = pulled["features"], pulled["bias"]
        weights = self._weights(pulled)
        acts = [field_inputs(v.rows, v.inverse, batch.vals)]
        for W, c in weights[:-1]:
            acts.append(np.maximum(acts[-1] @ W + c, 0.0))
        W, c = weights[-1]
        z = fm_logits(v.rows, float(b.rows[0, 0]), v.inverse, batch.vals)
        return z + (acts[-1] @ W + c)[:, 0], acts, weights

    def gradients(self, batch: Batch, pulled: dict[str, Lookup],
                  scale: float) -> tuple[dict[str, np.ndarray], float]:
        """As ``LogisticRegression.gradients``: the FM part's rows, then back-propagation
        through the MLP into its dense tables and the embeddings."""
        v = pulled["features"]
        z, acts, weights = self._forward(batch, pulled)
        g, loss = logloss_terms(z, batch.labels)
        g *= scale
        grads = {"features": fm_backward(v.rows, v.inverse, batch.vals, g),
                 "bias": np.array([[g.sum()]], dtype=np.float32)}
        d = g[:, None]
        for i in range(len(weights) - 1, -1, -1):
            W, _ = weights[i]
            grads[f"mlp{i}.w"] = (acts[i].T @ d).astype(np.float32).reshape(1, -1)
            grads[f"mlp{i}.b"] = d.sum(axis=0).astype(np.float32).reshape(1, -1)
            d = d @ W.T
            if i > 0:
                d *= acts[i] > 0
        add_field_grads(d, v.inverse, batch.vals, grads["features"])
        return grads, loss

    def predict(self, batch: Batch, pulled: dict[str, Lookup]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self._forward(batch, pulled)[0]))


Model = LogisticRegression | FactorizationMachine | DeepFM


def build_model(name: str, table_rows: int, dim: int = 8, init_std: float = 0.01,
                fields: int = 39, hidden: tuple[int, ...] = (64, 32)) -> Model:
    """The model named by ``--model``; ``fields`` is the data's field count (DeepFM)."""
    if name == "lr":
        return LogisticRegression(table_rows)
    if name == "fm":
        return FactorizationMachine(table_rows, dim, init_std)
    if name == "deepfm":
        return DeepFM(table_rows, dim, init_std, fields, hidden)
    raise ConfigError(f"--model must be lr, fm or deepfm, not {name!r}")
