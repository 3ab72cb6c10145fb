"""Placement without processes: epochs, joins and drains at the ring's minimum, the runs
that a change moves, and re-laying a shard out in place as the servers do."""
import numpy as np
import pytest

from mpips.models import TableSpec
from mpips.placement import (Moves, Placement, drain, join, moved_fraction, reads_of,
                             seeded_moves, transfers)
from mpips.ring import PartitionMap, TableLayout, name_salt

SPECS = [TableSpec("emb", 100_003, 3), TableSpec("bias", 1, 1), TableSpec("mlp", 1, 40)]


def apply_move(old: Placement, new: Placement, shards: list[list[np.ndarray]]
               ) -> list[list[np.ndarray]]:
    """Every server takes up ``new`` as ``ShardStore.move`` does, on NumPy arrays of the
    windows' capacity: leaving rows packed first, arriving rows written where the new
    layout puts them; a rebuilt table's staying rows copied into new arrays."""
    out = []
    for i, spec in enumerate(SPECS):
        plan = transfers(old.layouts[i], new.layouts[i])
        packed = {pair: shards[i][pair[0]][runs.src_rows()].copy()
                  for pair, runs in plan.items() if pair[0] != pair[1]}
        tables = []
        for s in range(new.n_servers):
            arr, staying = shards[i][s], plan.get((s, s))
            if i in new.rebuilt:
                arr = np.full((new.capacity[i, s], spec.dim), np.nan)
                if staying is not None:
                    arr[staying.dst_rows()] = shards[i][s][staying.src_rows()]
            else:
                assert staying is None or np.array_equal(staying.src, staying.dst)
            tables.append(arr)
        for (src, dst), rows in packed.items():
            tables[dst][plan[src, dst].dst_rows()] = rows
        out.append(tables)
    return out


def check_layout(placement: Placement, shards: list[list[np.ndarray]]) -> None:
    """Every key's row is where the layout says, holding the key."""
    for i, spec in enumerate(SPECS):
        layout = placement.layouts[i]
        for s in range(placement.n_servers):
            assert shards[i][s].shape[0] == placement.capacity[i, s] >= layout.shard_rows[s]
            keys, rows = layout.held(s)
            np.testing.assert_array_equal(shards[i][s][rows, 0], keys)


def initial_shards(p: Placement) -> list[list[np.ndarray]]:
    """Every server's windows as NumPy arrays, each row holding its key."""
    out = []
    for i, spec in enumerate(SPECS):
        tables = []
        for s in range(p.n_servers):
            arr = np.full((p.capacity[i, s], spec.dim), np.nan)
            keys, rows = p.layouts[i].held(s)
            arr[rows] = keys[:, None]
            tables.append(arr)
        out.append(tables)
    return out


def test_a_standby_server_joins_with_the_rings_minimum_and_no_new_windows():
    """Server 3 of 4 stands by; bringing it in moves about 1/4 of the partitions, all onto
    it, and its windows were made large enough beforehand."""
    p = Placement.start(SPECS, 4, 3)
    assert p.active() == [0, 1, 2] and p.epoch == 0
    moves = join(p, 3)
    q = p.after(moves)
    moved = p.pmap.moved(q.pmap)
    assert q.epoch == 1 and (q.pmap.owner[moved] == 3).all()
    assert moved.mean() <= 1.1 / 4 and moved.sum() == len(moves)
    assert q.rebuilt == ()
    assert moved_fraction(100_003, name_salt("emb"), p.pmap, q.pmap) < 1.1 / 4


def test_a_join_after_other_moves_still_moves_only_onto_the_new_server():
    p = Placement.start(SPECS, 3, 2)
    p = p.after(seeded_moves(p, 7, 3000))
    q = p.after(join(p, 2))
    moved = p.pmap.moved(q.pmap)
    assert (q.pmap.owner[moved] == 2).all() and moved.mean() <= 1.1 / 3


def test_a_drain_moves_exactly_the_drained_servers_partitions():
    p = Placement.start(SPECS, 3, 3)
    q = p.after(drain(p, 1))
    assert (p.pmap.moved(q.pmap) == (p.pmap.owner == 1)).all()
    assert q.active() == [0, 2] and int(q.layouts[0].shard_rows[1]) == 0
    with pytest.raises(ValueError, match="only active server"):
        drain(Placement.start(SPECS, 2, 1), 0)


def test_seeded_moves_repeat_and_go_to_other_active_servers():
    p = Placement.start(SPECS, 4, 3)
    a, b = seeded_moves(p, 5, 500), seeded_moves(p, 5, 500)
    assert np.array_equal(a.partitions, b.partitions) and np.array_equal(a.owners, b.owners)
    assert len(a) == 500 and (p.pmap.owner[a.partitions] != a.owners).all()
    assert set(a.owners.tolist()) <= {0, 1, 2}
    assert not np.array_equal(seeded_moves(p.after(a), 5, 500).partitions, a.partitions)
    assert len(seeded_moves(Placement.start(SPECS, 2, 1), 5, 10)) == 0


def test_moves_append_and_rebuild_only_when_a_window_overflows():
    """Headroom 0.5: moving 100 partitions appends them to the receiver and leaves the
    rows that stay where they were; draining one of two servers onto the other
    overflows its window, so that table is laid out afresh in new windows."""
    p = Placement.start(SPECS, 2, 2, headroom=0.5)
    moves = Moves(np.flatnonzero(p.pmap.owner == 0)[:100], np.ones(100, np.int32))
    r = p.after(moves)
    assert r.rebuilt == () and not r.layouts[0].canonical
    stay = np.flatnonzero(r.pmap.owner == p.pmap.owner)
    assert np.array_equal(r.layouts[0].base[stay], p.layouts[0].base[stay])
    assert (r.layouts[0].base[moves.partitions] >= p.layouts[0].shard_rows[1]).all()
    q = p.after(drain(p, 1))
    assert 0 in q.rebuilt and q.layouts[0].canonical
    assert (q.capacity[0] >= q.layouts[0].shard_rows).all()


@pytest.mark.parametrize("old_n,new_n", [(2, 3), (2, 1), (3, 2), (1, 4)])
def test_read_plans_put_every_row_where_the_ring_says(old_n, new_n):
    """Rebuilding every new shard from the old ones by the plans gives each key's row."""
    rows, salt = 100_003, name_salt("emb")
    old, new = PartitionMap.ring(old_n), PartitionMap.ring(new_n)
    before, after = TableLayout.build(rows, salt, old), TableLayout.build(rows, salt, new)
    shards = [before.keys_of(s).astype(np.float64) for s in range(old_n)]   # value = key
    moved = 0
    for j in range(new_n):
        out = np.full(int(after.shard_rows[j]), -1.0)
        for s, runs in reads_of(before, after, j).items():
            out[runs.dst_rows()] = shards[s][runs.src_rows()]
            moved += runs.rows if s != j else 0
        np.testing.assert_array_equal(out, after.keys_of(j))
        keys, at = after.held(j)
        np.testing.assert_array_equal(out[at], keys)
    assert moved / rows == pytest.approx(moved_fraction(rows, salt, old, new), abs=1e-12)
    if new_n == old_n + 1:     # consistent hashing: about 1/(S+1) moves, all onto the new one
        assert moved / rows < 1.1 / new_n


def test_rows_follow_every_move_through_many_epochs():
    """Seeded moves, a join, a drain and rebuilt windows, one after another: after each,
    every key's row, moved as the servers move it, holds that key where the layout says,
    and the runs between two layouts move each changed row once."""
    p = Placement.start(SPECS, 4, 3, headroom=0.25)
    shards = initial_shards(p)
    check_layout(p, shards)
    changes = [lambda q: seeded_moves(q, 1, 4000), lambda q: join(q, 3),
               lambda q: seeded_moves(q, 2, 20000), lambda q: drain(q, 0),
               lambda q: seeded_moves(q, 3, 9000), lambda q: drain(q, 3)]
    grew = 0
    for change in changes:
        q = p.after(change(p))
        grew += len(q.rebuilt)
        moved = sum(r.rows for (s, d), r in transfers(p.layouts[0], q.layouts[0]).items()
                    if s != d)
        assert moved == int(round(moved_fraction(100_003, name_salt("emb"), p.pmap, q.pmap)
                                  * 100_003))
        shards = apply_move(p, q, shards)
        check_layout(q, shards)
        p = q
    assert p.epoch == len(changes) and grew > 0 and p.active() == [1, 2]
