"""NumPy references: the kernels and a one-process BSP trainer, written independently."""
from __future__ import annotations

import numpy as np

from mpips.data import Source, epoch_order, share, shuffle_block
from mpips.kernels.quant import E_MAX, E_MIN, Z_MAX, Z_MIN


def sparse_batch(rng: np.random.Generator, n: int, fields: int, keys: int, dim: int,
                 std: float = 0.3) -> tuple[np.ndarray, ...]:
    """Random rows (keys x dim), a batch's row index per (sample, field), values, labels."""
    inv = rng.integers(0, keys, (n, fields))
    vals = rng.uniform(0.5, 1.5, (n, fields)).astype(np.float32)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    rows = rng.normal(0, std, (keys, dim)).astype(np.float32)
    return rows, inv, vals, labels


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


def sgd(w: np.ndarray, g: np.ndarray, lr: float | np.ndarray, l2: float) -> np.ndarray:
    return (w - lr * (g.astype(np.float64) + l2 * w)).astype(np.float32)


def adagrad(w: np.ndarray, acc: np.ndarray, g: np.ndarray, lr: float | np.ndarray, l2: float,
            eps: float) -> tuple[np.ndarray, np.ndarray]:
    g = g.astype(np.float64) + l2 * w
    acc = (acc + (g * g).astype(np.float32)).astype(np.float32)
    return (w - lr * g / (np.sqrt(acc.astype(np.float64)) + eps)).astype(np.float32), acc


def adam(w: np.ndarray, m: np.ndarray, v: np.ndarray, g: np.ndarray, lr: float | np.ndarray,
         l2: float, step: int, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = g.astype(np.float64) + l2 * w
    m = (beta1 * m + (1 - beta1) * g).astype(np.float32)
    v = (beta2 * v + (1 - beta2) * g * g).astype(np.float32)
    mhat = m / (1 - beta1 ** step)
    vhat = v / (1 - beta2 ** step)
    return (w - lr * mhat / (np.sqrt(vhat) + eps)).astype(np.float32), m, v


def ftrl(w: np.ndarray, z: np.ndarray, n: np.ndarray, g: np.ndarray,
         alpha: float | np.ndarray, beta: float, l1: float, l2: float
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FTRL-Proximal, McMahan et al. (2013), Algorithm 1, per coordinate."""
    g = g.astype(np.float64)
    n_new = n.astype(np.float64) + g * g
    sigma = (np.sqrt(n_new) - np.sqrt(n)) / alpha
    z = z + g - sigma * w
    w_new = np.where(np.abs(z) <= l1, 0.0,
                     -(z - np.sign(z) * l1) / ((beta + np.sqrt(n_new)) / alpha + l2))
    return w_new.astype(np.float32), z.astype(np.float32), n_new.astype(np.float32)


def deepfm_grad(pulled: dict[str, np.ndarray], inv: np.ndarray, vals: np.ndarray,
                labels: np.ndarray, scale: float, layers: list[tuple[int, int]]
                ) -> tuple[dict[str, np.ndarray], float]:
    """DeepFM in NumPy: the pairwise FM plus an MLP over the fields' scaled embeddings."""
    rows = pulled["features"]
    n, F = inv.shape
    k = rows.shape[1] - 1
    ws = [(pulled[f"mlp{i}.w"].reshape(a, b).astype(np.float64),
           pulled[f"mlp{i}.b"][0].astype(np.float64)) for i, (a, b) in enumerate(layers)]
    xv = rows[inv, 1:].astype(np.float64) * vals[..., None]
    acts = [xv.reshape(n, F * k)]
    pre = []
    for W, c in ws[:-1]:
        pre.append(acts[-1] @ W + c)
        acts.append(np.maximum(pre[-1], 0))
    deep = (acts[-1] @ ws[-1][0] + ws[-1][1])[:, 0]
    s = xv.sum(axis=1)
    pairs = 0.5 * ((s ** 2).sum(axis=1) - (xv ** 2).sum(axis=(1, 2)))
    fm = (rows[inv, 0] * vals).sum(axis=1) + pairs
    z = float(pulled["bias"][0, 0]) + fm + deep
    loss = float(np.sum(np.logaddexp(0.0, z) - labels * z))
    g = (1.0 / (1.0 + np.exp(-z)) - labels) * scale
    out = {"bias": np.array([[g.sum()]], np.float32)}
    d = g[:, None]
    for i in range(len(ws) - 1, -1, -1):
        out[f"mlp{i}.w"] = (acts[i].T @ d).astype(np.float32).reshape(1, -1)
        out[f"mlp{i}.b"] = d.sum(axis=0).astype(np.float32).reshape(1, -1)
        d = d @ ws[i][0].T
        if i > 0:
            d = d * (pre[i - 1] > 0)
    dxv = d.reshape(n, F, k) + g[:, None, None] * (s[:, None, :] - xv)
    grows = np.zeros(rows.shape, np.float32)
    np.add.at(grows[:, 0], inv.ravel(), (g[:, None] * vals).astype(np.float32).ravel())
    np.add.at(grows[:, 1:], inv.ravel(),
              (dxv * vals[..., None]).reshape(-1, k).astype(np.float32))
    out["features"] = grows
    return out, loss


def sparse_grad(grad):
    """Adapt an (rows, bias, ...) -> (g_rows, g_bias, loss) reference to the dict form."""
    def adapted(pulled, inv, vals, labels, scale):
        sparse = next(n for n in pulled if n != "bias")
        g_rows, g_b, loss = grad(pulled[sparse], float(pulled["bias"][0, 0]), inv, vals,
                                 labels, scale)
        return {sparse: g_rows, "bias": np.array([[g_b]], np.float32)}, loss
    return adapted


def bsp(source: Source, train_range: tuple[int, int], workers: int, tables: dict,
        grad, batch_size: int, epochs: int, update: "Updater", seed: int | None = None
        ) -> dict[str, np.ndarray]:
    """One-process BSP training: ``tables`` holds the initial values of one sparse table
    (``features`` or ``weights``) and of dense one-row tables. At step t every worker with a
    batch left contributes its batch's gradient, scaled by 1 / (batch_size * workers); the
    contributions are summed and one optimiser update is applied per table.
    ``grad(pulled, inverse, vals, labels, scale) -> (grads, loss)``. With ``seed`` each
    worker visits its batches in the shuffled order of every epoch, as ``--shuffle``."""
    per_worker = []
    for w in range(workers):
        lo, hi = share(*train_range, w, workers)
        batches = list(source.batches(lo, hi, batch_size))
        n = len(batches)
        orders = [epoch_order(n, e, seed, w, shuffle_block(batch_size)) if seed is not None
                  else range(n)
                  for e in range(epochs)]
        per_worker.append([batches[b] for order in orders for b in order])
    steps = max(len(b) for b in per_worker)
    sparse = "features" if "features" in tables else "weights"
    scale = 1.0 / (batch_size * workers)
    for t in range(steps):
        sums = {name: np.zeros_like(v) for name, v in tables.items()}
        touched = np.zeros(tables[sparse].shape[0], bool)
        for w in range(workers):
            if t >= len(per_worker[w]):
                continue
            batch = per_worker[w][t]
            uniq, inv = unique_first(batch.keys.ravel())
            pulled = {name: v[uniq] if name == sparse else v for name, v in tables.items()}
            grads, _ = grad(pulled, inv.reshape(batch.keys.shape), batch.vals, batch.labels,
                            scale)
            for name, g in grads.items():
                if name == sparse:
                    sums[name][uniq] += g
                else:
                    sums[name] += g
            touched[uniq] = True
        for name, v in tables.items():
            rows = np.flatnonzero(touched) if name == sparse else np.array([0])
            update(name, v, rows, sums[name], t + 1)
    return tables


def bsp_lr(source: Source, train_range: tuple[int, int], workers: int, table_rows: int,
           batch_size: int, epochs: int, lr: float, optimizer: str = "adagrad",
           l2: float = 0.0, eps: float = 1e-10, seed: int | None = None
           ) -> dict[str, np.ndarray]:
    """``bsp`` of logistic regression from zeros."""
    tables = {"weights": np.zeros((table_rows, 1), np.float32),
              "bias": np.zeros((1, 1), np.float32)}
    return bsp(source, train_range, workers, tables, sparse_grad(lr_grad), batch_size, epochs,
               Updater(optimizer, lr, l2, eps), seed)


class Updater:
    """A NumPy optimiser over whole tables, keeping state per table name; ``first`` gives
    tables whose column 0 (first-order weights) learns at its own rate."""

    def __init__(self, name: str, lr: float, l2: float = 0.0, eps: float = 1e-10,
                 l1: float = 0.0, first: dict[str, float] | None = None) -> None:
        self.name, self.lr, self.l2, self.eps, self.l1 = name, lr, l2, eps, l1
        self.first = first or {}
        self.state: dict[str, list[np.ndarray]] = {}

    def __call__(self, table: str, w: np.ndarray, rows: np.ndarray, g: np.ndarray,
                 step: int) -> None:
        """Update ``w[rows]`` in place with ``g[rows]`` (``step`` is 1-based)."""
        st = self.state.setdefault(table, [np.zeros_like(w), np.zeros_like(w)])
        a, b = st[0], st[1]
        lr = np.full(w.shape[1], self.lr)
        lr[:1] = self.first.get(table, self.lr)
        if self.name == "sgd":
            w[rows] = sgd(w[rows], g[rows], lr, self.l2)
        elif self.name == "adagrad":
            w[rows], a[rows] = adagrad(w[rows], a[rows], g[rows], lr, self.l2, self.eps)
        elif self.name == "adam":
            w[rows], a[rows], b[rows] = adam(w[rows], a[rows], b[rows], g[rows], lr,
                                             self.l2, step)
        else:
            w[rows], a[rows], b[rows] = ftrl(w[rows], a[rows], b[rows], g[rows], lr, 1.0,
                                             self.l1, self.l2)


def _exponent(x: np.ndarray) -> np.ndarray:
    """The least ``e`` with ``2**e >= x`` (int64; the least int8 exponent for x == 0)."""
    mant, ex = np.frexp(x)
    return np.where(x > 0, np.where(mant == 0.5, ex - 1, ex), E_MIN).astype(np.int64)


def int8_encode(rows: np.ndarray) -> np.ndarray:
    """Per row the smallest power-of-two scale that spans it in 255 steps and keeps the
    offset in int16, the offset ``z = floor(lo / scale)``, and ``q = rint(v / scale - z)``
    (``rint``: ties to even). Everything is exact in float64 but the one rounding."""
    n, d = rows.shape
    out = np.empty((n, 3 + d), dtype=np.uint8)
    if n == 0:
        return out
    v = rows.astype(np.float64)
    lo, hi = v.min(axis=1), v.max(axis=1)
    span = np.maximum(hi - lo, 0.0) / 254.0
    big = np.maximum(np.abs(lo), np.abs(hi)) / 32000.0
    e = np.clip(np.maximum(_exponent(span), _exponent(big)), E_MIN, E_MAX)
    z = np.clip(np.floor(np.ldexp(lo, -e)), Z_MIN, Z_MAX)
    q = np.clip(np.rint(np.ldexp(v, -e[:, None]) - z[:, None]), 0, 255)
    out[:, 0] = e.astype(np.int8).view(np.uint8)
    out[:, 1:3] = z.astype(np.int16).view(np.uint8).reshape(n, 2)
    out[:, 3:] = q.astype(np.uint8)
    return out


def fp16_encode(rows: np.ndarray) -> np.ndarray:
    """IEEE halves by NumPy: clipped to ±65504, rounded to nearest even (uint16 bits)."""
    with np.errstate(invalid="ignore"):
        return np.clip(rows, -65504.0, 65504.0).astype(np.float16).view(np.uint16)


def bf16_encode(rows: np.ndarray) -> np.ndarray:
    """The top 16 bits of each float32, rounded to nearest even; NaN as 0x7FC0."""
    bits = rows.view(np.uint32)
    top = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
           >> np.uint32(16)).astype(np.uint16)
    top[np.isnan(rows)] = np.uint16(0x7FC0)
    return top
