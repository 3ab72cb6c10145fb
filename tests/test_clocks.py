"""Consistency logic without processes: BSP rounds, the SSP rule, staleness records."""
import numpy as np
import pytest

from mpips.clocks import (DONE, BspRound, StalenessLog, SyncPolicy, bound_violated,
                          effective_sync, job_bound, may_start)
from mpips.errors import ProtocolError


def test_round_completes_with_one_push_per_worker_in_any_order():
    r = BspRound(0, frozenset({0, 1, 2}))
    for w in (2, 0):
        r.add(w, 0, last=False)
        assert not r.complete
    r.add(1, 0, last=False)
    assert r.complete and r.order() == [0, 1, 2]


def test_last_push_removes_a_worker_from_later_rounds():
    """A worker with fewer batches finishes early; the others go on without it."""
    r = BspRound(4, frozenset({0, 1}))
    r.add(1, 4, last=True)
    r.add(0, 4, last=False)
    nxt = r.next()
    assert nxt.step == 5 and nxt.active == {0}
    nxt.add(0, 5, last=True)
    assert nxt.next().active == frozenset()


@pytest.mark.parametrize("worker,step", [(3, 0), (0, 1)])
def test_unexpected_pushes_are_refused(worker, step):
    r = BspRound(0, frozenset({0, 1}))
    with pytest.raises(ProtocolError):
        r.add(worker, step, last=False)


def test_second_push_in_a_round_is_refused():
    r = BspRound(0, frozenset({0, 1}))
    r.add(0, 0, last=False)
    with pytest.raises(ProtocolError, match="worker 0 for step 0"):
        r.add(0, 0, last=False)


def test_ssp_start_rule():
    """A worker may start step t once every other worker has completed t - S steps."""
    clocks = np.array([5, 2, 7])
    assert may_start(clocks, me=0, step=5, bound=3)         # others: min 2 >= 5 - 3
    assert not may_start(clocks, me=0, step=6, bound=3)
    assert may_start(clocks, me=1, step=100, bound=None)    # ASP never waits
    assert may_start(np.array([3]), me=0, step=99, bound=0)  # alone
    assert may_start(np.array([0, DONE]), me=0, step=10**6, bound=1)


def test_server_side_bound_check():
    """The server's check flags a push that ran more than S steps ahead of a peer's push."""
    last = {0: 4, 1: 1}
    assert not bound_violated(last, worker=0, step=5, bound=3)   # peer pushed 1 >= 5-3-1
    assert bound_violated(last, worker=0, step=6, bound=3)
    assert not bound_violated({0: 9}, worker=0, step=50, bound=0)


def test_job_bound_from_table_policies():
    assert job_bound([SyncPolicy("bsp"), SyncPolicy("async")]) == (True, 0)
    assert job_bound([SyncPolicy("ssp", 5), SyncPolicy("ssp", 2)]) == (False, 2)
    assert job_bound([SyncPolicy("async"), SyncPolicy("ssp", 4)]) == (False, 4)
    assert job_bound([SyncPolicy("async")]) == (False, None)


def test_staleness_log_summary():
    log = StalenessLog(["a", "b"])
    for missed in (0, 2, 2, 500):
        log.record(1, missed)
    s = StalenessLog.summary(log.hist[1])
    assert s["updates"] == 4 and s["max"] == StalenessLog.BINS - 1
    assert abs(s["mean"] - (0 + 2 + 2 + 63) / 4) < 1e-12
    assert StalenessLog.summary(log.hist[0]) == {"updates": 0, "mean": 0.0, "max": 0,
                                                 "hist": [0] * StalenessLog.BINS}


def test_effective_sync_reports_the_pacing():
    """The strictest table paces the workers; each table keeps its own label."""
    got = effective_sync({"weights": SyncPolicy("async"), "bias": SyncPolicy("ssp", 2)})
    assert got == {"pacing": "ssp(2)", "tables": {"weights": "async", "bias": "ssp(2)"}}
    assert effective_sync({"w": SyncPolicy("async")})["pacing"] == "async"
    assert effective_sync({"w": SyncPolicy("async"), "b": SyncPolicy()})["pacing"] == "bsp"
