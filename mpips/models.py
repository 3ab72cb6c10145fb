"""CTR models as the workers see them: which table rows a batch needs, and their gradients.

Pure: a model names its tables (``TableSpec``), says which keys of each a batch looks up,
and turns the pulled rows into gradient rows for those keys with the numba kernels.

With feature admission (``rare``) the sparse table has one more row per field after the
hashed ones: the field's rare row. A key that the servers have not admitted yet holds
``NOT_ADMITTED`` in its row; a batch's lookups always include the rare rows, and every
cell whose key is not admitted reads (and trains) its field's rare row instead
(``admit``). Its own row then gets a zero gradient, and the push carries it as a
sighting: how many cells of the batch held it, which the servers count.
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

# The bits of a float32 NaN that no arithmetic produces: a row not admitted (yet).
NOT_ADMITTED = np.uint32(0x7FA0ADD5)


def not_admitted(rows: np.ndarray) -> np.ndarray:
    """Which of ``rows`` (float32, one per key) are marked as not admitted."""
    return np.ascontiguousarray(rows[:, 0]).view(np.uint32) == NOT_ADMITTED


def admit(lk: "Lookup", rare_from: int) -> None:
    """Point every cell of ``lk`` whose key is not admitted at its field's rare row (key
    ``rare_from + field``, among ``lk.keys``: the last ``fields`` of them) and zero the
    marked rows, so that they get a zero gradient; ``lk.seen`` keeps how many cells held
    each marked key (zero for the others). Idempotent."""
    marked = not_admitted(lk.rows)
    if not marked.any():
        return
    lk.seen = np.bincount(lk.inverse.ravel(), minlength=lk.keys.size) * marked
    fields = lk.inverse.shape[1]
    cells = marked[lk.inverse]
    lk.inverse[cells] = (lk.keys.size - fields) + np.nonzero(cells)[1]
    lk.rows[marked] = 0.0


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
    rare_from: int = -1       # feature admission: keys from here are the fields' rare rows
    sparse: bool = False      # a model's hashed table (admission and eviction apply to it)
    linear: int = 0           # leading columns that are first-order weights (--linear-lr)


@dataclass
class Lookup:
    """One table's rows for a batch: unique keys, each lookup's index into them, the rows,
    and after ``admit`` the keys' sightings."""

    keys: np.ndarray      # (U,) unique keys, first-appearance order
    inverse: np.ndarray   # batch-shaped index into ``keys``
    rows: np.ndarray      # (U, dim) pulled values, filled by the worker
    seen: np.ndarray | None = None   # (U,) cells per key not admitted, 0 for the others


def lookup(keys: np.ndarray, dim: int, rare_from: int = -1) -> Lookup:
    """Deduplicate the keys a batch needs; ``rows`` is left for the pull to fill. With
    ``rare_from`` >= 0 the fields' rare rows come last among the keys."""
    flat = np.ascontiguousarray(keys, dtype=np.int64).ravel()
    if rare_from >= 0:
        flat = np.concatenate([flat, rare_from + np.arange(keys.shape[1], dtype=np.int64)])
    uniq, inverse = unique_inverse(flat)
    return Lookup(uniq, inverse[:keys.size].reshape(keys.shape),
                  np.empty((uniq.size, dim), np.float32))


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
        spec = self.tables[0]
        return {self.sparse: lookup(batch.keys, spec.dim, spec.rare_from),
                "bias": lookup(np.zeros(1, dtype=np.int64), 1)}

    def admitted(self, pulled: dict[str, Lookup]) -> Lookup:
        """The sparse lookup, its keys not admitted pointed at their fields' rare rows."""
        v = pulled[self.sparse]
        if self.tables[0].rare_from >= 0:
            admit(v, self.tables[0].rare_from)
        return v

    def gradients(self, batch: Batch, pulled: dict[str, Lookup],
                  scale: float) -> tuple[dict[str, np.ndarray], float]:
        """Gradient rows per table (aligned with each ``Lookup.keys``) times ``scale``,
        and the batch's summed log-loss."""
        v, b = self.admitted(pulled), pulled["bias"]
        gv, gb, loss = self.grad(v.rows, float(b.rows[0, 0]), v.inverse, batch.vals,
                                 batch.labels, scale)
        return {self.sparse: gv, "bias": np.array([[gb]], dtype=np.float32)}, loss

    def predict(self, batch: Batch, pulled: dict[str, Lookup]) -> np.ndarray:
        """Click probabilities for the batch."""
        v, b = self.admitted(pulled), pulled["bias"]
        z = self.logits(v.rows, float(b.rows[0, 0]), v.inverse, batch.vals)
        return 1.0 / (1.0 + np.exp(-z))


class LogisticRegression(OneSparseTable):
    """``p = sigmoid(b + sum_f w[key_f] * val_f)`` over hashed sparse features."""

    sparse = "weights"
    logits = staticmethod(lr_logits)
    grad = staticmethod(lr_grad)

    def __init__(self, table_rows: int, rare: int = 0) -> None:
        self.tables = (sparse_spec("weights", table_rows, 1, rare), TableSpec("bias", 1, 1))


class FactorizationMachine(OneSparseTable):
    """``p = sigmoid(b + sum_f w_f x_f + sum_{f<g} <v_f, v_g> x_f x_g)``: one table row
    ``[w, v_1..v_k]`` per hashed feature, so one pull serves both terms."""

    sparse = "features"
    logits = staticmethod(fm_logits)
    grad = staticmethod(fm_grad)

    def __init__(self, table_rows: int, dim: int, init_std: float, rare: int = 0) -> None:
        self.tables = (sparse_spec("features", table_rows, 1 + dim, rare, init_std, 1,
                                   linear=1),
                       TableSpec("bias", 1, 1))


class DeepFM(FactorizationMachine):
    """FM plus an MLP tower (ReLU hidden layers) over the fields' scaled embeddings, whose
    outputs add up in one logit (Guo et al. 2017). Each MLP layer's weights and biases are
    dense tables (one row each) on the servers; weights start Glorot-normal, except the
    output layer's, which start at zero: the model starts as its FM and the tower adds
    to it as it learns (over the Kaggle sample's seeds 0-4: AUC +0.0008 on average)."""

    def __init__(self, table_rows: int, dim: int, init_std: float, fields: int,
                 hidden: tuple[int, ...], rare: int = 0) -> None:
        super().__init__(table_rows, dim, init_std, rare)
        sizes = [fields * dim, *hidden, 1]
        self.layers = list(zip(sizes[:-1], sizes[1:]))
        dense = []
        for i, (a, b) in enumerate(self.layers):
            std = float(np.sqrt(2.0 / (a + b))) if b > 1 else 0.0
            dense += [TableSpec(f"mlp{i}.w", 1, a * b, std), TableSpec(f"mlp{i}.b", 1, b)]
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
        v, b = self.admitted(pulled), pulled["bias"]
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


def sparse_spec(name: str, table_rows: int, dim: int, rare: int, init_std: float = 0.0,
                init_from: int = 0, linear: int = 0) -> TableSpec:
    """A model's sparse table: ``table_rows`` hashed rows, then ``rare`` fields' rare rows
    (feature admission; 0: none); its first ``linear`` columns are first-order weights."""
    return TableSpec(name, table_rows + rare, dim, init_std, init_from,
                     table_rows if rare else -1, sparse=True, linear=linear)


def build_model(name: str, table_rows: int, dim: int = 8, init_std: float = 0.01,
                fields: int = 39, hidden: tuple[int, ...] = (64, 32),
                admission: bool = False) -> Model:
    """The model named by ``--model``; ``fields`` is the data's field count (DeepFM, and
    the rare rows of ``admission``)."""
    rare = fields if admission else 0
    if name == "lr":
        return LogisticRegression(table_rows, rare)
    if name == "fm":
        return FactorizationMachine(table_rows, dim, init_std, rare)
    if name == "deepfm":
        return DeepFM(table_rows, dim, init_std, fields, hidden, rare)
    raise ConfigError(f"--model must be lr, fm or deepfm, not {name!r}")
