"""Error feedback: both residual stores against a dict, what was sent plus the residual is
exactly the sum of the gradients, top-k picks, the memory bound, what the last push drops,
the same bytes from either store, and residuals in a checkpoint file."""
import numpy as np
import pytest

from mpips.checkpoint.residualfile import read_residuals, write_residuals
from mpips.checkpoint.layout import partial_dir
from mpips.errors import CheckpointError
from mpips.codecs import BF16, FP16, INT8, RAW, Compression, decode_rows
from mpips.keyrows import DirectRows, KeyedRows, residual_store
from mpips.residuals import feedback, top_rows

DIM = 5
COMPRESSIONS = [Compression(FP16), Compression(BF16), Compression(INT8),
                Compression(RAW, 0.1), Compression(INT8, 0.1), Compression(FP16, 0.3)]
STORES = {"hashed": lambda: KeyedRows(DIM, 1 << 20), "direct": lambda: DirectRows(DIM, 6000)}
GROWING = {**STORES, "hashed from 16 rows": lambda: KeyedRows(DIM, 16)}


@pytest.mark.parametrize("kind", GROWING)
def test_the_store_keeps_rows_by_key_like_a_dict(kind):
    """Random puts (zero rows remove), takes and growth (a pool of 16 rows doubling to
    4,096), against a dict."""
    rng = np.random.default_rng(1)
    store, ref = GROWING[kind](), {}
    for age in range(60):
        keys = rng.choice(3000, rng.integers(1, 400), replace=False).astype(np.int64)
        rows = rng.normal(size=(keys.size, DIM)).astype(np.float32)
        rows[rng.random(keys.size) < 0.3] = 0
        store.put(keys, rows, age)
        for k, r in zip(keys.tolist(), rows):
            if np.any(r):
                ref[k] = r
            else:
                ref.pop(k, None)
        if age % 7 == 3:
            some = np.array(sorted(ref)[:50], np.int64)
            slots = store.add_rows(some, np.zeros((some.size, DIM), np.float32))
            taken, got = store.take(slots)
            for k, r in zip(taken.tolist(), got):
                np.testing.assert_array_equal(ref.pop(k), r)
        assert len(store) == len(ref)
    keys, rows, _ = store.arrays()
    assert keys.tolist() == sorted(ref)
    np.testing.assert_array_equal(rows, np.array([ref[k] for k in sorted(ref)]))
    assert np.all(store.add_rows(np.array([5000, 5999], np.int64),
                                 np.zeros((2, DIM), np.float32)) == -1)


def grid_gradients(rng: np.random.Generator, n: int) -> np.ndarray:
    """Multiples of 2**-24 below 2**-5: every sum the test makes is exact in float32."""
    return (rng.integers(-2 ** 19, 2 ** 19, size=(n, DIM)) * 2.0 ** -24).astype(np.float32)


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("comp", COMPRESSIONS, ids=lambda c: c.name)
def test_sent_plus_residual_is_exactly_the_sum_of_the_gradients(comp, kind):
    """Nothing is lost, only delayed: after 12 steps over overlapping keys, what the
    servers decoded plus what the worker still holds equals the gradients' sum, bit for
    bit; the last push (``flush``) leaves the store empty and counts what it dropped."""
    rng = np.random.default_rng(2)
    store = STORES[kind]()
    total, sent = np.zeros((400, DIM)), np.zeros((400, DIM))
    for step in range(13):
        keys = rng.choice(400, 120, replace=False).astype(np.int64)
        grads = grid_gradients(rng, keys.size)
        total[keys] += grads
        out = feedback(store, comp, keys, grads, step, flush=step == 12)
        assert np.unique(out.keys).size == out.keys.size
        np.add.at(sent, out.keys, decode_rows(comp.codec, out.coded, DIM).astype(np.float64))
        held = np.zeros_like(total)
        k, r, _ = store.arrays()
        held[k] = r
        if step < 12:
            np.testing.assert_array_equal(sent + held, total)
    assert len(store) == 0
    left = np.count_nonzero(np.any(total != sent, axis=1))     # keys the servers lack
    assert out.dropped == left > 0


def test_topk_sends_the_largest_rows_ties_by_key():
    rows = np.array([[3.0], [1.0], [-5.0], [1.0], [1.0], [0.5]], np.float32)
    keys = np.array([10, 4, 7, 2, 9, 1])
    assert top_rows(rows, keys, 0.5).tolist() == [0, 2, 3]     # 5, 3, then key 2 of the 1s
    assert top_rows(rows, keys, 1.0).tolist() == list(range(6))
    assert top_rows(rows[:0], keys[:0], 0.1).size == 0


def test_topk_holds_rows_back_whole_and_sends_a_tenth():
    rng = np.random.default_rng(3)
    store = KeyedRows(DIM, 1 << 20)
    keys = np.arange(1000, dtype=np.int64)
    grads = rng.normal(size=(1000, DIM)).astype(np.float32)
    out = feedback(store, Compression(RAW, 0.1), keys, grads, 0)
    assert out.keys.size == 100 and len(store) == 900 and not out.same
    norms = np.linalg.norm(grads, axis=1)
    assert norms[out.keys].min() >= np.sort(norms)[-100]


def test_the_store_stays_within_its_bound_sending_the_oldest():
    """A store of 300 keys under top-k over new keys each step: it never holds more than
    300 (plus the step in hand), the keys it lets go are the oldest, and with raw rows
    nothing at all is lost."""
    rng = np.random.default_rng(4)
    store = KeyedRows(DIM, 300)              # not a power of two: the pool rounds up
    total, sent = np.zeros((5000, DIM)), np.zeros((5000, DIM))
    for step in range(20):
        keys = np.arange(step * 100, step * 100 + 100, dtype=np.int64)
        grads = grid_gradients(rng, 100)
        total[keys] += grads
        out = feedback(store, Compression(RAW, 0.1), keys, grads, step)
        np.add.at(sent, out.keys, decode_rows(RAW, out.coded, DIM).astype(np.float64))
        assert len(store) <= 300
        kept, rows, ages = store.arrays()
        assert out.dropped == 0 and ages.min() >= step - 3
        held = np.zeros_like(total)
        held[kept] = rows
        np.testing.assert_array_equal(sent + held, total)


def test_the_same_gradients_give_the_same_bytes():
    """Run to run with either store; and the direct store sends what a hashed one sends
    while the hashed one lets no key go (below its bound)."""
    rng = np.random.default_rng(5)
    steps = [(rng.choice(500, 80, replace=False).astype(np.int64),
              rng.normal(size=(80, DIM)).astype(np.float32)) for _ in range(6)]

    def run(store):
        return [feedback(store, Compression(INT8, 0.2), k, g, i, flush=i == 5)
                for i, (k, g) in enumerate(steps)]

    small, again, big, direct = (run(KeyedRows(DIM, 200)), run(KeyedRows(DIM, 200)),
                                 run(KeyedRows(DIM, 1000)), run(DirectRows(DIM, 500)))
    for a, b in [*zip(small, again), *zip(big, direct)]:
        assert np.array_equal(a.keys, b.keys) and np.array_equal(a.coded, b.coded)
        assert a.dropped == b.dropped
    assert any(not np.array_equal(a.keys, b.keys) for a, b in zip(small, big))


def test_slots_found_before_the_pool_grows_hold_after_it():
    """A step whose new keys double the hashed pool (4,096 rows to 8,192) writes its old
    keys' residuals back through the slots found before the growth: step by step the same
    records and residuals as the direct store's."""
    rng = np.random.default_rng(8)
    stores = [KeyedRows(DIM, 1 << 20), DirectRows(DIM, 7000)]
    for step, keys in enumerate([np.arange(3000), np.arange(6000), np.arange(0, 7000, 2)]):
        grads = grid_gradients(rng, keys.size)
        outs = [feedback(s, Compression(FP16), keys, grads, step) for s in stores]
        assert np.array_equal(outs[0].coded, outs[1].coded)
        for a, b in zip(stores[0].arrays()[:2], stores[1].arrays()[:2]):
            np.testing.assert_array_equal(a, b)
        assert len(stores[0]) == len(stores[1]) > 2900
    assert stores[0].pkeys.size == 8192


def test_a_direct_store_refuses_keys_outside_its_table():
    store = DirectRows(DIM, 10)
    for bad in ([3, 10], [-1, 2]):
        with pytest.raises(ValueError, match=r"residual keys must lie in \[0, 10\)"):
            store.add_rows(np.array(bad, np.int64), np.zeros((2, DIM), np.float32))


def test_a_table_small_enough_keeps_a_residual_row_per_key():
    """Direct where a row per table key takes no more memory than the hash map's bound:
    LR's one-value rows of 2**21 keys under the default bound of 2**20 keys, not FM's
    rows of 17."""
    assert isinstance(residual_store(1, 1 << 21, 1 << 20), DirectRows)
    assert isinstance(residual_store(17, 1 << 21, 1 << 20), KeyedRows)
    assert isinstance(residual_store(1, 1 << 21, 1 << 16), KeyedRows)


def test_residuals_survive_a_checkpoint_file(tmp_path):
    """Written for a pause and read back: the same keys, rows and ages; resumed with one
    worker instead of two, worker 0 takes both files' residuals, summed per key."""
    rng = np.random.default_rng(6)
    stores = []
    for w in range(2):
        s = KeyedRows(DIM, 1000)
        s.put(np.arange(w, 40, 2 - w, dtype=np.int64),
              rng.normal(size=(40 // (2 - w), DIM)).astype(np.float32) + 1, 3 + w)
        stores.append(s)
    entries = [write_residuals(tmp_path, 8, w, ["bias", "features"], [None, s])
               for w, s in enumerate(stores)]
    folder = partial_dir(tmp_path, 8)
    doc = {"workers": [{"index": w, "residuals": e} for w, e in enumerate(entries)]}
    same = read_residuals(doc, folder, 1, 2, ["bias", "features"], [1, DIM], [1, 40])
    assert same[0] is None
    for a, b in zip(same[1], stores[1].arrays()):
        np.testing.assert_array_equal(a, b)
    keys, rows, ages = read_residuals(doc, folder, 0, 1, ["bias", "features"], [1, DIM],
                                      [1, 40])[1]
    a, b = stores[0].arrays(), stores[1].arrays()
    assert keys.tolist() == list(range(40)) and ages.tolist() == [3] + [4] * 39
    expect = np.zeros((40, DIM), np.float32)
    expect[a[0]] += a[1]
    expect[b[0]] += b[1]
    np.testing.assert_array_equal(rows, expect)
    with pytest.raises(CheckpointError, match="'features' name keys outside its 39 rows"):
        read_residuals(doc, folder, 0, 1, ["bias", "features"], [1, DIM], [1, 39])


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("comp", [Compression(INT8), Compression(INT8, 0.1)],
                         ids=lambda c: c.name)
def test_the_last_push_is_a_step_like_the_others_and_drops_the_rest(comp, kind):
    """The last push leaves the store empty and sends what any step would: the step's
    rows (with topk, its top share), none of the other keys held. What it leaves, the
    other keys' residuals (rounding, or with topk whole rows held back) and the step's
    own rounding or unsent rows, is dropped and counted, not sent at the cost of a row
    each."""
    rng = np.random.default_rng(6)
    store = STORES[kind]()
    for step in range(3):
        feedback(store, comp, np.arange(step * 50, step * 50 + 100, dtype=np.int64),
                 rng.normal(size=(100, DIM)).astype(np.float32), step)
    held = len(store)
    keys = np.arange(0, 20, dtype=np.int64)
    out = feedback(store, comp, keys, rng.normal(size=(20, DIM)).astype(np.float32), 3,
                   flush=True)
    assert len(store) == 0
    if comp.keep is None:
        assert out.same and out.keys.size == 20 and out.dropped == held
    else:       # the top 2 of the step's 20 rows (all held before): every held key
        assert out.keys.size == 2 and set(out.keys.tolist()) <= set(range(20))  # leaves
        assert out.dropped == held          # something: 18 unsent, 2 rounded, 180 others
