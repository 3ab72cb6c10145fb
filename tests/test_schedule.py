"""A worker's schedule of batches, and regrouping a checkpoint's workers. No MPI."""
from collections import Counter

import pytest

from mpips.data import share
from mpips.data.schedule import Schedule, entry_at, regroup, schedules, worker_entries
from mpips.config import TrainConfig

CFG = TrainConfig(batch_size=10, epochs=3, seed=4)
ROWS = (0, 1003)


def rows_of(sched: Schedule, start: int) -> Counter:
    """Every row a schedule trains on from ``start`` (row -> times)."""
    seen: Counter = Counter()
    epoch, batches = sched.remaining(start)
    for lo, hi in batches:
        seen.update(range(lo, hi))
    for _ in range(epoch + 1, sched.epochs):
        seen.update(range(*sched.rows))
    return seen


def test_a_schedule_walks_its_epochs_in_order():
    sched = schedules(CFG, ROWS, 2)[1]
    assert sched.rows == share(*ROWS, 1, 2) and sched.steps_per_epoch == 51
    assert sched.end == 153
    epoch, left = sched.remaining(60)
    assert epoch == 1 and len(left) == 42
    assert sched.rows_left(60) == sum(hi - lo for lo, hi in left) + 502
    assert sched.rows_left(0) == 3 * 502 and sched.rows_left(153) == 0



def regrouped_rows(entries: list[dict], old: list, new_n: int) -> tuple[Counter, Counter, list]:
    """(rows the old workers had left, rows the ``new_n`` regrouped workers have left, the
    new entries): each a count per row, to compare as multisets."""
    want = sum((rows_of(s, e["step"]) for s, e in zip(old, entries)), Counter())
    new_entries = regroup(entries, old, schedules(CFG, ROWS, new_n))
    new = [s.resumed(e) for s, e in zip(schedules(CFG, ROWS, new_n), new_entries)]
    got = sum((rows_of(s, e["step"]) for s, e in zip(new, new_entries)), Counter())
    return want, got, new_entries


@pytest.mark.parametrize("old_n,new_n,step", [(2, 3, 60), (3, 2, 40), (2, 1, 51), (1, 4, 7)])
def test_regrouped_workers_train_exactly_the_rows_left(old_n, new_n, step):
    """Regrouping mid-epoch: the new workers together train every row left exactly as often
    as the old ones would have, then whole epochs of their own shares."""
    old = schedules(CFG, ROWS, old_n)
    entries = [{"index": w, "step": step, "finished": False, "samples": 100, "loss": 1.0}
               for w in range(old_n)]
    want, got, new_entries = regrouped_rows(entries, old, new_n)
    assert got == want
    assert sum(e["samples"] for e in new_entries) == 100 * old_n
    assert {e["step"] for e in new_entries} == {step}       # step numbers go on


@pytest.mark.parametrize("steps,new_n", [((10, 60), 3), ((10, 60, 140), 2), ((0, 150), 1)])
def test_workers_in_different_epochs_are_regrouped(steps, new_n):
    """Workers apart by epochs (SSP, ASP) regroup too: every row left through the
    furthest one's epoch is carried, and no row is lost or doubled."""
    old_n = len(steps)
    old = schedules(CFG, ROWS, old_n)
    entries = [{"index": w, "step": st, "finished": False, "samples": 7, "loss": 0.5}
               for w, st in enumerate(steps)]
    want, got, new_entries = regrouped_rows(entries, old, new_n)
    assert got == want
    assert sum(e["samples"] for e in new_entries) == 7 * old_n
    assert worker_entries(entries, CFG, ROWS, old_n) == entries      # same count: as saved


@pytest.mark.parametrize("start,step", [(None, 60), ({"step": 20}, 60), (None, 500)])
def test_a_dead_workers_entry_counts_the_samples_of_its_steps(start, step):
    """A worker that died at ``step`` (past its end: it had finished) is where its
    schedule says, having trained every row of its steps since it started; regrouped,
    the survivors train the rest, so the job trains exactly its planned rows."""
    old = schedules(CFG, ROWS, 2)
    if start is not None:
        start = dict(start, samples=40, loss=2.0, **old[1].entry())
    dead = entry_at(old[1].resumed(start), start, 1, step)
    begin = start["step"] if start else 0
    assert dead["step"] == min(step, old[1].end) and dead["finished"] == (step >= 153)
    assert dead["samples"] == (40 if start else 0) + sum(
        rows_of(old[1], begin).values()) - sum(rows_of(old[1], dead["step"]).values())
    assert dead["loss"] == (2.0 if start else 0.0)
    alive = {"index": 0, "step": min(step, old[0].end), "finished": step >= old[0].end,
             "samples": 0, "loss": 0.0}
    (one,) = worker_entries([alive, dead], CFG, ROWS, 1)
    left = rows_of(old[0], alive["step"]) + rows_of(old[1], dead["step"])
    again = schedules(CFG, ROWS, 1)[0].resumed(one)
    assert rows_of(again, one["step"]) == left


def test_finished_workers_leave_nothing():
    old = schedules(CFG, ROWS, 2)
    entries = [{"index": w, "step": s.end, "finished": True, "samples": 5, "loss": 0.0}
               for w, s in enumerate(old)]
    new = regroup(entries, old, schedules(CFG, ROWS, 3))
    assert all(e["finished"] for e in new)
