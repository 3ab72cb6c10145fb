"""The server's state machine walked message by message, without processes."""
import numpy as np
import pytest

from mpips.clocks import Start, SyncPolicy
from mpips.errors import ProtocolError
from mpips.message import FLAG_LAST, PushMessage, TablePart, mark
from mpips.serving import Ack, Apply, Finish, Pause, ServerMachine

BSP, SSP1, ASP = SyncPolicy("bsp"), SyncPolicy("ssp", 1), SyncPolicy("async")


def push(worker: int, step: int, last: bool = False, epoch: int = 0) -> PushMessage:
    part = TablePart(0, 0, np.array([worker]), np.ones((1, 1), np.float32))
    return PushMessage(worker, step, FLAG_LAST if last else 0, epoch, [part, part])


def kinds(actions) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_a_bsp_round_applies_in_worker_order_whatever_the_arrival_order():
    """Pushes of step 0 arrive 2, 0, 1: nothing happens until the last, then one update
    of all three in worker order (Adam's step 1) and their acks."""
    m = ServerMachine([BSP, BSP], Start.fresh(3), 0)
    assert m.begin() == []
    assert m.on_message(push(2, 0)) == [] and m.on_message(push(0, 0)) == []
    apply, ack = m.on_message(push(1, 0))
    assert isinstance(apply, Apply) and [p.worker for p in apply.pushes] == [0, 1, 2]
    assert apply.step == 1 and apply.tables == (0, 1) and isinstance(ack, Ack)
    assert m.steps == 1 and m.applied == 3


def test_non_bsp_tables_are_applied_as_pushes_arrive_inside_rounds():
    m = ServerMachine([ASP, BSP], Start.fresh(2), 0)
    first = m.on_message(push(1, 0))
    assert kinds(first) == ["Apply"] and first[0].tables == (0,)
    assert kinds(m.on_message(push(0, 0))) == ["Apply", "Apply", "Ack"]


def test_last_pushes_leave_the_rounds_and_finish_the_job():
    m = ServerMachine([BSP], Start.fresh(2), 0)
    m.on_message(push(0, 0, last=True))
    m.on_message(push(1, 0))
    assert m.active == {1}
    assert kinds(m.on_message(push(1, 1, last=True)))[-1] == "Finish" and m.steps == 2


def test_pause_once_every_training_worker_marked():
    """Worker 0 marks step 5; the pause waits for worker 1, then names the latest label;
    messages during the pause are refused; resuming goes on at the new epoch."""
    m = ServerMachine([SSP1], Start.fresh(2), 0)
    m.on_message(push(0, 4))
    assert m.on_message(mark(0, 5, 0)) == []
    m.on_message(push(1, 4))
    (pause,) = m.on_message(mark(1, 5, 0))
    assert pause == Pause(5, (0, 1))
    with pytest.raises(ProtocolError, match="paused"):
        m.on_message(push(0, 5))
    m.resume(1)
    with pytest.raises(ProtocolError, match="epoch 0"):
        m.on_message(push(0, 5, epoch=0))
    assert kinds(m.on_message(push(0, 5, epoch=1))) == ["Apply", "Ack"]


def test_a_last_push_can_complete_a_pause():
    """Worker 0 marked; worker 1 then sends its last push instead: the pause holds."""
    m = ServerMachine([ASP], Start.fresh(2), 0)
    m.on_message(mark(0, 3, 0))
    out = m.on_message(push(1, 2, last=True))
    assert kinds(out) == ["Apply", "Ack", "Pause"] and out[-1] == Pause(3, (0,))


def test_a_push_for_another_placement_never_reaches_the_rows():
    """The server is at epoch 2 after a move; a push routed with epoch 1's layout is
    refused before any Apply, so no row of the new layout is touched."""
    m = ServerMachine([BSP], Start.fresh(1), 2)
    with pytest.raises(ProtocolError, match="epoch 1"):
        m.on_message(push(0, 0, epoch=1))
    assert m.applied == 0 and m.pending == {}


def test_ssp_bound_violations_are_counted():
    """SSP(1): worker 0's step t is legal once worker 1's step t - 2 arrived."""
    m = ServerMachine([SSP1], Start.fresh(2), 0)
    m.on_message(push(0, 0))
    m.on_message(push(0, 1))
    assert m.violations == 0
    m.on_message(push(0, 2))               # worker 1's step 0 has not arrived
    assert m.violations == 1
    m.on_message(push(1, 0))
    m.on_message(push(0, 2))
    assert m.violations == 1


def test_messages_from_finished_or_unknown_workers_are_refused():
    m = ServerMachine([ASP], Start((3, 3), (True, False)), 0)
    assert m.active == {1}
    with pytest.raises(ProtocolError, match="finished"):
        m.on_message(push(0, 3))
    done = ServerMachine([ASP], Start((3,), (True,)), 0)
    assert done.begin() == [Finish(0)]
