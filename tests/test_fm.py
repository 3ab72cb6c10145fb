"""FM and DeepFM against textbook definitions and finite differences; seeded init."""
import numpy as np

import reference as ref
from mpips.data import Batch
from mpips.kernels.fm import fm_grad, fm_logits
from mpips.kernels.init import normal_rows
from mpips.models import build_model

rng = np.random.default_rng(7)


def batch(n=40, fields=6, keys=25, k=4):
    return ref.sparse_batch(rng, n, fields, keys, 1 + k, std=0.2)


def test_fm_matches_the_pairwise_definition():
    rows, inv, vals, labels = batch()
    g, gb, loss = fm_grad(rows, 0.1, inv, vals, labels, 1 / 40)
    rg, rgb, rloss = ref.fm_grad(rows, 0.1, inv, vals, labels, 1 / 40)
    np.testing.assert_allclose(g, rg, rtol=1e-4, atol=1e-7)
    assert abs(gb - rgb) < 1e-9 and abs(loss - rloss) < 1e-6 * abs(rloss)


def test_fm_gradient_matches_finite_differences():
    rows, inv, vals, labels = batch(n=12, keys=6, k=3)
    r64 = rows.astype(np.float64)
    g, gb, _ = fm_grad(rows, -0.2, inv, vals, labels, 1.0)

    def loss(r, b):
        z = fm_logits(r, b, inv, vals)
        return float(np.sum(np.logaddexp(0, z) - labels * z))

    h = 1e-6
    for idx in np.ndindex(*rows.shape):
        e = np.zeros_like(r64)
        e[idx] = h
        num = (loss(r64 + e, -0.2) - loss(r64 - e, -0.2)) / (2 * h)
        assert abs(num - g[idx]) < 1e-4 * max(1, abs(num)), idx
    num_b = (loss(r64, -0.2 + h) - loss(r64, -0.2 - h)) / (2 * h)
    assert abs(num_b - gb) < 1e-4 * max(1, abs(num_b))


def test_seeded_init_depends_only_on_key():
    """A row's initial values do not depend on which other keys share the call."""
    keys = np.arange(5000, dtype=np.int64)
    a = np.empty((5000, 9), np.float32)
    normal_rows(a, keys, 1, 0.01, np.uint64(3))
    b = np.empty((10, 9), np.float32)
    normal_rows(b, keys[::-500].copy(), 1, 0.01, np.uint64(3))
    assert np.array_equal(b, a[::-500])
    assert (a[:, 0] == 0).all()
    assert abs(a[:, 1:].std() - 0.01) < 0.0005 and abs(a[:, 1:].mean()) < 0.0005
    c = np.empty((5000, 9), np.float32)
    normal_rows(c, keys, 1, 0.01, np.uint64(4))
    assert not np.array_equal(a, c)


def test_deepfm_gradients_match_finite_differences():
    """Every DeepFM parameter -- embeddings, linear weights, bias, MLP weights and biases."""
    model = build_model("deepfm", table_rows=50, dim=3, init_std=0.3, fields=4, hidden=(5, 3))
    inv = rng.integers(0, 7, (10, 4))
    keys = rng.permutation(50)[:7]
    b = Batch(keys[inv], rng.uniform(0.5, 1.5, (10, 4)).astype(np.float32),
              (rng.random(10) < 0.4).astype(np.float32))
    pulled = model.lookups(b)
    for lk in pulled.values():
        lk.rows = rng.normal(0, 0.4, lk.rows.shape)            # float64 for the check
    grads, _ = model.gradients(b, pulled, 1.0)

    def loss() -> float:
        p = model.predict(b, pulled)
        return float(-np.sum(b.labels * np.log(p) + (1 - b.labels) * np.log1p(-p)))

    h = 1e-6
    for name, lk in pulled.items():
        for idx in np.ndindex(*lk.rows.shape):
            keep = lk.rows[idx]
            lk.rows[idx] = keep + h
            up = loss()
            lk.rows[idx] = keep - h
            down = loss()
            lk.rows[idx] = keep
            num = (up - down) / (2 * h)
            assert abs(num - grads[name][idx]) < 1e-4 * max(1, abs(num)), (name, idx)
