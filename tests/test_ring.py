"""Consistent hashing: balance, minimal movement, and the key -> (server, offset) layout."""
import numpy as np
import pytest

from mpips.ring import PartitionMap, TableLayout, name_salt, ring_owners, route


@pytest.fixture(scope="module")
def maps():
    return {s: PartitionMap.ring(s) for s in range(1, 66)}


def test_balance_up_to_64_servers(maps):
    """Max/mean partitions per server stays within 1.10 for every size from 1 to 64."""
    for s in range(1, 65):
        counts = np.bincount(maps[s].owner, minlength=s)
        assert counts.max() / counts.mean() <= 1.10, s


def test_adding_a_server_moves_little_and_only_onto_it(maps):
    """From S to S+1 servers at most 1.1/(S+1) of the partitions move, all to the new one."""
    for s in range(1, 65):
        moved = maps[s].moved(maps[s + 1])
        assert moved.mean() <= 1.1 / (s + 1), s
        assert (maps[s + 1].owner[moved] == s).all()


def test_removing_a_server_moves_only_its_partitions():
    """Dropping server 3 of 8 reassigns exactly the partitions it owned."""
    full = ring_owners(range(8))
    without = ring_owners([0, 1, 2, 4, 5, 6, 7])
    assert ((full != without) == (full == 3)).all()


def test_layout_is_a_bijection_onto_shards():
    """Every key gets a distinct (server, offset) and each shard is filled exactly."""
    pmap = PartitionMap.ring(3)
    for rows in (1, 7, 1000, 200_003):
        layout = TableLayout.build(rows, name_salt(f"t{rows}"), pmap)
        server, offset = layout.locate(np.arange(rows))
        assert layout.shard_rows.sum() == rows
        for s in range(3):
            mine = np.sort(offset[server == s])
            assert (mine == np.arange(layout.shard_rows[s])).all()
            assert (layout.locate(layout.keys_of(s))[1] == np.arange(mine.size)).all()
            chunks = list(layout.iter_keys(s, chunk_rows=97))
            assert np.array_equal(np.concatenate([k for _, k in chunks]), layout.keys_of(s))
            assert [f for f, _ in chunks] == list(np.cumsum([0] + [k.size for _, k in chunks])[:-1])


def test_layout_rejects_keys_outside_the_table():
    layout = TableLayout.build(10, 0, PartitionMap.ring(2))
    with pytest.raises(KeyError):
        layout.locate(np.array([10]))


def test_route_groups_keys_by_server_stably():
    layout = TableLayout.build(5000, 17, PartitionMap.ring(4))
    keys = np.random.default_rng(0).permutation(5000)[:900]
    r = route(layout, keys)
    server, offset = layout.locate(keys)
    for s in range(4):
        pos = r.positions(s)
        assert (np.diff(pos) > 0).all() and (server[pos] == s).all()
        assert (r.rows_on(s) == offset[pos]).all()
    assert r.bounds[-1] == keys.size


def test_moving_partitions_changes_only_those():
    pmap = PartitionMap.ring(2)
    moved = pmap.with_owner(np.array([0, 5, 9]), 2)
    assert moved.n_servers == 3
    assert np.flatnonzero(pmap.moved(moved)).tolist() == [p for p in (0, 5, 9)
                                                          if pmap.owner[p] != 2]
