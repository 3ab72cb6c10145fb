"""Each numba kernel against its NumPy reference; the LR gradient against finite differences."""
import numpy as np

import reference as ref
from mpips.kernels.lr import lr_grad, lr_logits
from mpips.kernels.optim import adagrad_rows, adam_rows, ftrl_rows, sgd_rows
from mpips.kernels.sparse import (accumulate_rows, add_partition_counts, gather_rows,
                                  gather_scatter_rows, release_slots, scatter_rows,
                                  segment_sum, unique_inverse)
from mpips.optim import Optimizer

rng = np.random.default_rng(42)


def test_unique_inverse_matches_numpy():
    for keys in (rng.integers(0, 50, 1000), rng.integers(0, 2**40, 5000),
                 np.array([], np.int64), np.array([7, 7, 7])):
        keys = keys.astype(np.int64)
        uniq, inv = unique_inverse(keys)
        ru, ri = ref.unique_first(keys)
        assert (uniq == ru).all() and (inv == ri).all()
        assert (uniq[inv] == keys).all()


def test_segment_sum_matches_add_at():
    inv = rng.integers(0, 40, 500)
    rows = rng.normal(size=(500, 3)).astype(np.float32)
    expect = np.zeros((40, 3), np.float32)
    np.add.at(expect, inv, rows)
    assert np.array_equal(segment_sum(inv, rows, 40), expect)


def test_accumulate_rows_sums_pushes_in_order():
    """Several pushes summed by offset equal np.add.at; the slots are released after."""
    slot = np.zeros(100, np.int32)
    pushes = [(rng.permutation(100)[:k], rng.normal(size=(k, 3)).astype(np.float32))
              for k in (30, 50, 0, 70)]
    total = sum(o.size for o, _ in pushes)
    touched, acc, n = np.empty(total, np.int64), np.empty((total, 3), np.float32), 0
    for offsets, rows in pushes:
        n = accumulate_rows(slot, offsets, rows, touched, acc, n)
    release_slots(slot, touched[:n])
    expect = np.zeros((100, 3), np.float32)
    for offsets, rows in pushes:
        expect[offsets] += rows
    assert sorted(touched[:n]) == sorted(set(np.concatenate([o for o, _ in pushes])))
    assert np.array_equal(acc[:n], expect[touched[:n]])
    assert (slot == 0).all()


def test_gather_and_scatter_rows():
    table = rng.normal(size=(100, 4)).astype(np.float32)
    idx = rng.integers(0, 100, 30)
    out = np.empty((30, 4), np.float32)
    gather_rows(table, idx, out)
    assert np.array_equal(out, table[idx])
    perm = rng.permutation(30)
    back = np.empty_like(out)
    scatter_rows(out, perm, back)
    assert np.array_equal(back[perm], out)
    fused = np.empty_like(out)
    gather_scatter_rows(table, idx, perm, fused)
    assert np.array_equal(fused[perm], table[idx])


def _batch(n=64, fields=5, keys=30):
    return ref.sparse_batch(rng, n, fields, keys, 1)


def test_lr_grad_matches_numpy():
    w, inv, vals, labels = _batch()
    gw, gb, loss = lr_grad(w, 0.1, inv, vals, labels, 1 / 64)
    rw, rb, rloss = ref.lr_grad(w, 0.1, inv, vals, labels, 1 / 64)
    np.testing.assert_allclose(gw, rw, rtol=1e-5, atol=1e-7)
    assert abs(gb - rb) < 1e-9 and abs(loss - rloss) < 1e-6 * abs(rloss)


def test_lr_grad_matches_finite_differences():
    w, inv, vals, labels = _batch(n=16, keys=8)
    w64 = w.astype(np.float64)
    gw, gb, _ = lr_grad(w, 0.2, inv, vals, labels, 1.0)

    def loss(wv, b):
        z = b + (wv[inv, 0] * vals).sum(axis=1)
        return float(np.sum(np.logaddexp(0, z) - labels * z))

    h = 1e-6
    for k in range(8):
        e = np.zeros_like(w64)
        e[k] = h
        num = (loss(w64 + e, 0.2) - loss(w64 - e, 0.2)) / (2 * h)
        assert abs(num - gw[k, 0]) < 1e-4 * max(1, abs(num))
    num_b = (loss(w64, 0.2 + h) - loss(w64, 0.2 - h)) / (2 * h)
    assert abs(num_b - gb) < 1e-4 * max(1, abs(num_b))


def test_lr_logits_stable_for_large_inputs():
    inv = np.zeros((2, 1), np.int64)
    w = np.array([[50.0]], np.float32)
    z = lr_logits(w, 0.0, inv, np.array([[1.0], [-1.0]], np.float32))
    assert np.allclose(z, [50, -50])
    _, _, loss = lr_grad(w, 0.0, inv, np.array([[1.0], [-1.0]], np.float32),
                         np.array([0.0, 1.0], np.float32), 1.0)
    assert np.isfinite(loss) and abs(loss - 100.0) < 1e-9


def test_sgd_and_adagrad_rows_match_numpy():
    """Each column at its own learning rate (a first-order weight beside an embedding)."""
    lr = np.array([0.1, 0.02, 0.3, 0.1])
    table = rng.normal(size=(50, 4)).astype(np.float32)
    acc = rng.uniform(0, 1, (50, 4)).astype(np.float32)
    offs = rng.permutation(50)[:20]
    g = rng.normal(size=(20, 4)).astype(np.float32)
    t1 = table.copy()
    sgd_rows(t1, offs, g, lr, 0.01)
    expect = table.copy()
    expect[offs] = ref.sgd(table[offs], g, lr, 0.01)
    np.testing.assert_allclose(t1, expect, rtol=1e-6)
    t2, a2 = table.copy(), acc.copy()
    adagrad_rows(t2, a2, offs, g, lr, 0.01, 1e-10)
    ew, ea = table.copy(), acc.copy()
    ew[offs], ea[offs] = ref.adagrad(table[offs], acc[offs], g, lr, 0.01, 1e-10)
    np.testing.assert_allclose(t2, ew, rtol=1e-6)
    np.testing.assert_allclose(a2, ea, rtol=1e-6)
    untouched = np.setdiff1d(np.arange(50), offs)
    assert np.array_equal(t2[untouched], table[untouched])


def test_adam_rows_match_numpy_over_steps():
    """Lazy Adam: only touched rows move; bias correction follows the table's step."""
    table = rng.normal(size=(40, 3)).astype(np.float32)
    m, v = np.zeros_like(table), np.zeros_like(table)
    ew, em, ev = table.copy(), m.copy(), v.copy()
    for step in (1, 2, 3):
        offs = rng.permutation(40)[:15]
        g = rng.normal(size=(15, 3)).astype(np.float32)
        adam_rows(table, m, v, offs, g, np.array([0.01, 0.03, 0.01]), 0.001, 0.9, 0.999, 1e-8,
                  step)
        ew[offs], em[offs], ev[offs] = ref.adam(ew[offs], em[offs], ev[offs], g,
                                                np.array([0.01, 0.03, 0.01]), 0.001, step)
    np.testing.assert_allclose(table, ew, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m, em, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(v, ev, rtol=1e-5, atol=1e-9)


def test_ftrl_rows_match_numpy_and_make_zeros():
    """FTRL-Proximal per coordinate; a large L1 keeps weak coordinates exactly at zero."""
    table = np.zeros((30, 2), np.float32)
    z, n = np.zeros_like(table), np.zeros_like(table)
    ew, ez, en = table.copy(), z.copy(), n.copy()
    for _ in range(4):
        offs = rng.permutation(30)[:12]
        g = rng.normal(size=(12, 2)).astype(np.float32)
        ftrl_rows(table, z, n, offs, g, np.array([0.1, 0.4]), 1.0, 0.5, 0.01)
        ew[offs], ez[offs], en[offs] = ref.ftrl(ew[offs], ez[offs], en[offs], g,
                                                np.array([0.1, 0.4]), 1.0, 0.5, 0.01)
    np.testing.assert_allclose(table, ew, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(z, ez, rtol=1e-5, atol=1e-6)
    assert (table == 0).sum() > 0 and (table != 0).sum() > 0


def test_first_order_columns_take_their_own_rate():
    opt = Optimizer("adagrad", lr=0.01, linear_lr=0.05)
    assert opt.rates(4, linear=1).tolist() == [0.05, 0.01, 0.01, 0.01]
    assert opt.rates(3).tolist() == [0.01] * 3
    assert Optimizer("adagrad", lr=0.01).rates(2, linear=1).tolist() == [0.01, 0.01]


def test_optimizer_state_lives_beside_rows():
    opt = Optimizer("adagrad", lr=0.1)
    state = opt.new_state((10, 3))
    assert set(state) == {"accum"} and state["accum"].shape == (10, 3)
    assert Optimizer("sgd").new_state((10, 3)) == {}
    assert set(Optimizer("adam").new_state((2, 2))) == {"m", "v"}
    assert set(Optimizer("ftrl").new_state((2, 2))) == {"z", "n"}


def test_partition_counts_equal_a_bincount():
    """The worker's partition load: each key's partition gets the weight."""
    keys = np.random.default_rng(3).integers(0, 10**9, 5000)
    counts = np.zeros(4096)
    add_partition_counts(counts, keys, 17, 4096, 2.5)
    add_partition_counts(counts, keys[:10], 17, 4096, 1.0)
    want = np.bincount((keys + 17) % 4096, minlength=4096) * 2.5 \
        + np.bincount((keys[:10] + 17) % 4096, minlength=4096)
    np.testing.assert_array_equal(counts, want)
