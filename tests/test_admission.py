"""Feature admission and eviction without processes: the servers' rule (counts, the
seeded draw, stale rows) and the workers' side (a key not admitted reads and trains its
field's rare row)."""
import numpy as np
import pytest

from mpips.admission import COUNT_MAX, RowPolicy, add_counts, draw, new_record
from mpips.data import Batch
from mpips.models import NOT_ADMITTED, build_model, not_admitted


def test_a_key_is_admitted_exactly_once_seen_min_count_times():
    """Counts include the step that sees the key: with N = 3 the third sighting admits
    it, so its first three lookups read the rare row and the fourth its own."""
    policy = RowPolicy(min_count=3)
    counts = np.array([0, 1, 2, 3, 4])
    assert policy.admits(counts, np.arange(5), step=7).tolist() == [False, False, False,
                                                                   True, True]
    assert RowPolicy(min_count=1).admitting and not RowPolicy().admitting
    assert RowPolicy(evict_after=5).tracking and not RowPolicy(evict_after=5).admitting


def test_counts_add_sightings_and_stop_at_the_int32_limit():
    counts = np.array([0, 5, COUNT_MAX - 1], dtype=np.int32)
    got = add_counts(counts, np.array([3, 1, 7]))
    assert got.dtype == np.int32 and got.tolist() == [3, 6, COUNT_MAX]


def test_the_admission_draw_depends_only_on_seed_key_and_step():
    keys = np.arange(200_000, dtype=np.int64)
    a = draw(3, keys, 11)
    assert np.array_equal(a, draw(3, keys, 11)) and np.array_equal(a[5:9], draw(3, keys[5:9], 11))
    assert not np.array_equal(a, draw(3, keys, 12)) and not np.array_equal(a, draw(4, keys, 11))
    assert 0 <= a.min() and a.max() < 1
    admitted = RowPolicy(admit_probability=0.25).admits(np.ones(keys.size), keys, 11)
    assert abs(admitted.mean() - 0.25) < 0.005


def test_rows_untouched_for_evict_after_steps_are_stale():
    policy = RowPolicy(evict_after=16)
    assert policy.sweep_every == 2 and policy.sweeps(4) and not policy.sweeps(5)
    last = np.array([-1, 0, 4, 5, 20], dtype=np.int32)
    assert policy.stale(last, 20).tolist() == [False, True, True, False, False]
    assert RowPolicy(evict_after=3).sweep_every == 1 and not RowPolicy().sweeps(8)
    rec = new_record(3)
    assert rec.dtype == np.int32 and rec[:, 0].tolist() == [0] * 3
    assert rec[:, 1].tolist() == [-1] * 3


def batch(keys) -> Batch:
    keys = np.asarray(keys, dtype=np.int64)
    return Batch(keys, np.ones(keys.shape, np.float32), np.array([1, 0, 1], np.float32)[
        :keys.shape[0]])


def pulled(model, b, marked: set[int]):
    """Lookups filled with seeded rows; the keys in ``marked`` are not admitted."""
    lks = model.lookups(b)
    rng = np.random.default_rng(0)
    for lk in lks.values():
        lk.rows[:] = rng.normal(size=lk.rows.shape).astype(np.float32)
    sparse = lks[model.sparse]
    for j, k in enumerate(sparse.keys):
        if int(k) in marked:
            sparse.rows[j].view(np.uint32)[:] = NOT_ADMITTED
    return lks


@pytest.mark.parametrize("name", ["lr", "fm", "deepfm"])
def test_a_key_not_admitted_reads_and_trains_its_fields_rare_row(name):
    """Table of 10 hashed rows and 2 fields: rare rows are keys 10 and 11. Key 4 (field
    0 in row 0, field 1 in row 2) is not admitted: those cells read rare rows 10 and 11,
    as if the batch named them; key 4's own gradient row is zero."""
    model = build_model(name, 10, dim=3, init_std=0.1, fields=2, hidden=(4,),
                        admission=True)
    spec = model.tables[0]
    assert (spec.rows, spec.rare_from, spec.sparse) == (12, 10, True)
    b = batch([[4, 1], [2, 3], [5, 4]])
    lks = pulled(model, b, {4})
    sparse = lks[model.sparse]
    assert sparse.keys[-2:].tolist() == [10, 11]
    grads, loss = model.gradients(b, lks, 1.0)
    # The same batch with the rare rows named outright, on rows that are not marked.
    same = batch([[10, 1], [2, 3], [5, 11]])
    plain = pulled(model, same, set())
    by_key = {int(k): r for k, r in zip(sparse.keys, sparse.rows)}
    for lk_name, lk in plain.items():
        if lk_name == model.sparse:
            for j, k in enumerate(lk.keys):
                lk.rows[j] = by_key[int(k)]
        else:
            lk.rows[:] = lks[lk_name].rows
    want, want_loss = model.gradients(same, plain, 1.0)
    g = dict(zip(sparse.keys.tolist(), grads[model.sparse]))
    w = dict(zip(plain[model.sparse].keys.tolist(), want[model.sparse]))
    assert np.all(g[4] == 0) and not not_admitted(sparse.rows).any()
    # The push carries key 4 as a sighting of two cells, and no other key.
    assert dict(zip(sparse.keys.tolist(), sparse.seen.tolist())) == {
        k: 2 if k == 4 else 0 for k in sparse.keys.tolist()}
    for k in (1, 2, 3, 5, 10, 11):
        assert np.allclose(g[k], w[k], rtol=1e-6, atol=1e-7)
    assert loss == pytest.approx(want_loss, rel=1e-9)
    assert np.allclose(model.predict(b, lks), model.predict(same, plain), rtol=1e-9)


def test_without_admission_the_table_has_no_rare_rows():
    model = build_model("fm", 10, dim=3, fields=2)
    assert model.tables[0].rows == 10 and model.tables[0].rare_from == -1
    assert model.lookups(batch([[1, 2]]))["features"].keys.tolist() == [1, 2]
