"""The BSP clock, without processes: rounds, early finishers, protocol violations."""
import pytest

from mpips.clocks import BspRound, ProtocolError


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
