"""NumPy references: the kernels and a one-process BSP trainer, written independently."""
from __future__ import annotations

import numpy as np

from mpips.data import Source, share


def unique_first(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique keys in first-appearance order and the inverse index."""
    uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return uniq[order], rank[inv.ravel()]


def lr_grad(w: np.ndarray, b: float, inv: np.ndarray, vals: np.ndarray, labels: np.ndarray,
            scale: float) -> tuple[np.ndarray, float, float]:
    z = b + (w[inv, 0].astype(np.float64) * vals).sum(axis=1)
    p = 1.0 / (1.0 + np.exp(-z))
    loss = float(np.sum(np.logaddexp(0.0, z) - labels * z))
    g = (p - labels) * scale
    gw = np.zeros((w.shape[0], 1), dtype=np.float32)
    np.add.at(gw[:, 0], inv.ravel(), (g[:, None] * vals).astype(np.float32).ravel())
    return gw, float(g.sum()), loss


def fm_grad(rows: np.ndarray, b: float, inv: np.ndarray, vals: np.ndarray,
            labels: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """FM by the textbook pairwise sum (not the O(kn) identity), and its gradient."""
    w, v = rows[:, 0].astype(np.float64), rows[:, 1:].astype(np.float64)
    xv = v[inv] * vals[..., None]                        # (n, F, k)
    n, F = inv.shape
    pair = np.zeros(n)
    for f in range(F):
        for g in range(f + 1, F):
            pair += (xv[:, f] * xv[:, g]).sum(axis=1)
    z = b + (w[inv] * vals).sum(axis=1) + pair
    p = 1.0 / (1.0 + np.exp(-z))
    loss = float(np.sum(np.logaddexp(0.0, z) - labels * z))
    g = (p - labels) * scale
    s = xv.sum(axis=1)                                   # (n, k)
    grows = np.zeros(rows.shape, np.float32)
    np.add.at(grows[:, 0], inv.ravel(), (g[:, None] * vals).astype(np.float32).ravel())
    gv = g[:, None, None] * vals[..., None] * (s[:, None, :] - xv)
    np.add.at(grows[:, 1:], inv.ravel(), gv.reshape(-1, v.shape[1]).astype(np.float32))
    return grows, float(g.sum()), loss


def sgd(w: np.ndarray, g: np.ndarray, lr: float, l2: float) -> np.ndarray:
    return (w - lr * (g.astype(np.float64) + l2 * w)).astype(np.float32)


def adagrad(w: np.ndarray, acc: np.ndarray, g: np.ndarray, lr: float, l2: float,
            eps: float) -> tuple[np.ndarray, np.ndarray]:
    g = g.astype(np.float64) + l2 * w
    acc = (acc + (g * g).astype(np.float32)).astype(np.float32)
    return (w - lr * g / (np.sqrt(acc.astype(np.float64)) + eps)).astype(np.float32), acc


def adam(w: np.ndarray, m: np.ndarray, v: np.ndarray, g: np.ndarray, lr: float, l2: float,
         step: int, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = g.astype(np.float64) + l2 * w
    m = (beta1 * m + (1 - beta1) * g).astype(np.float32)
    v = (beta2 * v + (1 - beta2) * g * g).astype(np.float32)
    mhat = m / (1 - beta1 ** step)
    vhat = v / (1 - beta2 ** step)
    return (w - lr * mhat / (np.sqrt(vhat) + eps)).astype(np.float32), m, v


def ftrl(w: np.ndarray, z: np.ndarray, n: np.ndarray, g: np.ndarray, alpha: float,
         beta: float, l1: float, l2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FTRL-Proximal, McMahan et al. (2013), Algorithm 1, per coordinate."""
    g = g.astype(np.float64)
    n_new = n.astype(np.float64) + g * g
    sigma = (np.sqrt(n_new) - np.sqrt(n)) / alpha
    z = z + g - sigma * w
    w_new = np.where(np.abs(z) <= l1, 0.0,
                     -(z - np.sign(z) * l1) / ((beta + np.sqrt(n_new)) / alpha + l2))
    return w_new.astype(np.float32), z.astype(np.float32), n_new.astype(np.float32)


def bsp(source: Source, train_range: tuple[int, int], workers: int, tables: dict,
        grad, batch_size: int, epochs: int, update: "Updater") -> dict[str, np.ndarray]:
    """One-process BSP training of a model with a sparse table ``features`` (or
    ``weights``) and a ``bias``: at step t every worker with a batch left contributes its
    batch's gradient, scaled by 1 / (batch_size * workers); all contributions are summed
    and one optimiser update is applied. ``tables`` holds the initial values."""
    per_worker = []
    for w in range(workers):
        lo, hi = share(*train_range, w, workers)
        per_worker.append(list(source.batches(lo, hi, batch_size)) * epochs)
    steps = max(len(b) for b in per_worker)
    sparse = next(n for n in tables if n != "bias")
    W, B = tables[sparse], tables["bias"]
    scale = 1.0 / (batch_size * workers)
    for t in range(steps):
        gW, gB = np.zeros_like(W), np.zeros_like(B)
        touched = np.zeros(W.shape[0], bool)
        for w in range(workers):
            if t >= len(per_worker[w]):
                continue
            batch = per_worker[w][t]
            uniq, inv = unique_first(batch.keys.ravel())
            gw, gb, _ = grad(W[uniq], float(B[0, 0]), inv.reshape(batch.keys.shape),
                             batch.vals, batch.labels, scale)
            gW[uniq] += gw
            gB[0, 0] += np.float32(gb)
            touched[uniq] = True
        update(sparse, W, np.flatnonzero(touched), gW, t + 1)
        update("bias", B, np.array([0]), gB, t + 1)
    return tables


def bsp_lr(source: Source, train_range: tuple[int, int], workers: int, table_rows: int,
           batch_size: int, epochs: int, lr: float, optimizer: str = "adagrad",
           l2: float = 0.0, eps: float = 1e-10) -> dict[str, np.ndarray]:
    """``bsp`` of logistic regression from zeros."""
    tables = {"weights": np.zeros((table_rows, 1), np.float32),
              "bias": np.zeros((1, 1), np.float32)}
    return bsp(source, train_range, workers, tables, lr_grad, batch_size, epochs,
               Updater(optimizer, lr, l2, eps))


class Updater:
    """A NumPy optimiser over whole tables, keeping state per table name."""

    def __init__(self, name: str, lr: float, l2: float = 0.0, eps: float = 1e-10,
                 l1: float = 0.0) -> None:
        self.name, self.lr, self.l2, self.eps, self.l1 = name, lr, l2, eps, l1
        self.state: dict[str, list[np.ndarray]] = {}

    def __call__(self, table: str, w: np.ndarray, rows: np.ndarray, g: np.ndarray,
                 step: int) -> None:
        """Update ``w[rows]`` in place with ``g[rows]`` (``step`` is 1-based)."""
        st = self.state.setdefault(table, [np.zeros_like(w), np.zeros_like(w)])
        a, b = st[0], st[1]
        if self.name == "sgd":
            w[rows] = sgd(w[rows], g[rows], self.lr, self.l2)
        elif self.name == "adagrad":
            w[rows], a[rows] = adagrad(w[rows], a[rows], g[rows], self.lr, self.l2, self.eps)
        elif self.name == "adam":
            w[rows], a[rows], b[rows] = adam(w[rows], a[rows], b[rows], g[rows], self.lr,
                                             self.l2, step)
        else:
            w[rows], a[rows], b[rows] = ftrl(w[rows], a[rows], b[rows], g[rows], self.lr, 1.0,
                                             self.l1, self.l2)
