"""Balancing SSP and ASP workers: the pool of batches, whom to steal from, how many
batches to merge. No MPI: the board's counters are simulated with a list."""
from collections import Counter

import numpy as np
import pytest

from mpips.balance import MAX_MERGE, Pool, merge_factor, next_batch, victim
from mpips.config import TrainConfig
from mpips.data import Batch, batch_of
from mpips.data.schedule import schedules as fresh_schedules, worker_entries
from mpips.errors import ConfigError
from mpips.job import prepare

CFG = TrainConfig(batch_size=10, epochs=3, seed=4)
ROWS = (0, 1003)


def test_every_owner_position_is_one_batch_of_its_share_each_epoch():
    pool = Pool.of(CFG, ROWS, 3)
    seen: Counter = Counter()
    for owner, end in enumerate(pool.ends()):
        epochs = []
        for position in range(end):
            epoch, (lo, hi) = pool.unit(owner, position)
            epochs.append(epoch)
            assert pool.schedules[owner].rows[0] <= lo < hi <= pool.schedules[owner].rows[1]
            seen.update(range(lo, hi))
        assert epochs == sorted(epochs) and set(epochs) == {0, 1, 2}
    assert seen == Counter({row: 3 for row in range(*ROWS)})


def test_rows_left_counts_the_rows_of_the_positions_left():
    pool = Pool.of(CFG, ROWS, 2)
    for position in (0, 7, 50, 51, 100, 152, 153):
        want = sum(hi - lo for _, (lo, hi) in (pool.unit(1, p)
                                                for p in range(position, pool.ends()[1])))
        assert pool.rows_left(1, position) == want


def test_a_worker_takes_its_own_first_then_from_whoever_has_most_left():
    assert victim(np.array([3, 5, 1]), 0) == 0
    assert victim(np.array([0, 5, 7]), 0) == 2
    assert victim(np.array([0, 6, 6]), 0) == 1           # the lowest index among equals
    assert victim(np.array([0, 0, 0]), 1) is None


@pytest.mark.parametrize("speeds", [(1, 1, 1), (1, 3, 3), (1, 5, 2, 7), (4, 0, 4)])
def test_simulated_workers_take_every_batch_once_and_finish_together(speeds):
    """Workers of different speeds (batches per tick; 0: a worker that never gets to
    take) share the pool through counters kept as the board keeps them (a take may
    run past an owner's end): every position of every owner is trained exactly once,
    and the fast workers go on until none is left."""
    pool = Pool.of(CFG, ROWS, len(speeds))
    ends, counters = pool.ends(), np.zeros(len(speeds), dtype=np.int64)

    def take(owner: int) -> int:
        counters[owner] += 1
        return int(counters[owner] - 1)

    trained: Counter = Counter()
    own_left = [True] * len(speeds)
    done, tick, last_tick = [False] * len(speeds), 0, {}
    while not all(d or s == 0 for d, s in zip(done, speeds)):
        tick += 1
        for w, speed in enumerate(speeds):
            for _ in range(speed):
                if done[w]:
                    break
                got = next_batch(take, counters.copy, ends, w, own_left[w])
                if got is None:
                    done[w], last_tick[w] = True, tick
                    break
                own_left[w] = got[0] == w
                trained[got] += 1
    assert trained == Counter({(o, p): 1 for o in range(len(speeds)) for p in range(ends[o])})
    finished = [t for w, t in last_tick.items() if speeds[w] > 0]
    assert max(finished) - min(finished) <= 1


def test_a_fast_worker_merges_as_many_batches_as_it_is_faster():
    assert merge_factor(0.0, np.array([100.0, 300.0])) == 1       # not measured yet
    assert merge_factor(300.0, np.array([0.0, 300.0])) == 1      # nobody slower known
    assert merge_factor(300.0, np.array([100.0, 300.0])) == 3
    assert merge_factor(190.0, np.array([100.0, 190.0])) == 1    # rounded down
    assert merge_factor(200.0, np.array([100.0, 190.0])) == 2
    assert merge_factor(100.0, np.array([100.0, 300.0])) == 1    # the slowest itself
    assert merge_factor(1e9, np.array([1.0, 1e9])) == MAX_MERGE


def test_batches_concatenate_in_turn():
    a = Batch(np.arange(6).reshape(3, 2), np.ones((3, 2), np.float32), np.zeros(3, np.float32))
    b = Batch(np.arange(6, 10).reshape(2, 2), np.ones((2, 2), np.float32),
              np.ones(2, np.float32))
    both = Batch.concat([a, b])
    assert len(both) == 5 and both.keys[:, 0].tolist() == [0, 2, 4, 6, 8]
    assert both.true_p is None and Batch.concat([a]) is a


@pytest.mark.parametrize("new_n", [1, 3])
def test_a_balanced_checkpoint_regroups_every_batch_left(new_n):
    """Balanced workers resumed with another count (a worker died, say): the batches
    taken but not trained and every pool position left are carried, each once, and the
    new pool is empty."""
    old = fresh_schedules(CFG, ROWS, 2)
    ends = [s.steps_per_epoch * s.epochs for s in old]
    entries = [{"index": w, "step": 9, "finished": False, "samples": 90, "loss": 1.0,
                "epoch": 0, "carry": [[10 * w, 10 * w + 5]], "pool": 4 + w}
               for w in range(2)]
    assert worker_entries(entries, CFG, ROWS, 2) == entries
    new = worker_entries(entries, CFG, ROWS, new_n)
    pool = Pool(old)
    want = Counter(tuple(c) for e in entries for c in e["carry"])
    want.update(pool.unit(w, p)[1] for w in range(2) for p in range(4 + w, ends[w]))
    assert Counter(tuple(c) for e in new for c in e["carry"]) == want
    fresh = fresh_schedules(CFG, ROWS, new_n)
    assert [e["pool"] for e in new] == [s.steps_per_epoch * s.epochs for s in fresh]
    assert sum(e["samples"] for e in new) == 180 and not any(e["finished"] for e in new)


def test_balance_is_refused_where_the_job_runs_in_bsp_rounds():
    with pytest.raises(ConfigError, match="--balance must be one of auto, on, off"):
        TrainConfig(balance="maybe")
    with pytest.raises(ConfigError, match="--balance on: this job runs in BSP rounds"):
        prepare(TrainConfig(balance="on", synthetic_rows=2000), 4)
    with pytest.raises(ConfigError, match="--balance on: this job runs in BSP rounds"):
        prepare(TrainConfig(balance="on", sync="async", synthetic_rows=2000,
                            tables=(("bias", "bsp", 0),)), 4)
    prepare(TrainConfig(balance="on", sync="ssp", synthetic_rows=2000), 4)


def test_rows_are_found_as_a_whole_batch_of_one_share():
    shares = [(0, 25), (25, 50)]
    assert batch_of(shares, (10, 20), 10) == (0, 1)
    assert batch_of(shares, (20, 25), 10) == (0, 2)          # the share's short last batch
    assert batch_of(shares, (35, 45), 10) == (1, 1)
    assert batch_of(shares, (15, 25), 10) is None            # not on a batch boundary
    assert batch_of(shares, (20, 30), 10) is None            # across two shares
