"""The scheduler's side of pauses walked record by record: checkpoints, moves, stops, the
final checkpoint, and what the planner moves, without processes."""
import numpy as np
import pytest

from mpips.config import TrainConfig
from mpips.errors import ConfigError, ProtocolError
from mpips.models import TableSpec
from mpips.pausing import END, GO, WRITE, AskWrite, PauseMachine, PauseSchedule, Publish, \
    Reply, Verdict
from mpips.placement import Moves, Placement
from mpips.planner import AID_PARTITIONS, Planner, check_schedule

SPECS = [TableSpec("w", 5000, 1), TableSpec("bias", 1, 1)]


def record(w: int) -> dict:
    return {"index": w, "step": 10, "finished": False, "samples": 100 * w, "loss": 0.0}


def machine(planner=lambda label, requested, p: None, every=0, servers=2, workers=2,
            checkpointing=True) -> PauseMachine:
    return PauseMachine(servers, workers, PauseSchedule(checkpoint_every=every),
                        checkpointing, planner, Placement.start(SPECS, servers, servers))


def still_training(w: int):
    return None


def test_a_pause_without_a_checkpoint_ends_with_a_verdict_for_everyone():
    m = machine()
    m.request(move=True)
    assert m.server_paused(0, 7, [0, 1], still_training) == []
    assert m.worker_stopped(0, record(0), still_training) == []
    assert m.server_paused(1, 7, [0, 1], still_training) == []
    (v,) = m.worker_stopped(1, record(1), still_training)
    assert isinstance(v, Verdict) and v.label == 7 and not v.stop and v.moves is None
    assert v.workers == (0, 1) and v.parked == () and not m.pending


def test_a_checkpoint_asks_the_servers_to_write_then_publishes_and_goes_on():
    """Step 20 is a multiple of --checkpoint-every 10: write, publish with every
    worker's entry (the finished one's from its progress), then the verdict."""
    m = machine(every=10)
    entry = {"index": 1, "step": 20, "finished": True, "samples": 5, "loss": 0.0}
    finished = {1: entry}.get
    m.server_paused(0, 20, [0], finished)
    m.server_paused(1, 20, [0], finished)
    (ask,) = m.worker_stopped(0, record(0), finished)
    assert ask == AskWrite(20)
    assert m.server_wrote(0, {"index": 0, "step": 20}, finished) == []
    publish, verdict = m.server_wrote(1, {"index": 1, "step": 20}, finished)
    assert isinstance(publish, Publish) and not publish.final and not publish.stop
    assert [w["index"] for w in publish.workers] == [0, 1]
    assert verdict.workers == (0,) and verdict.parked == (1,) and not verdict.stop


def test_a_stop_request_writes_and_stops_without_moving():
    planner_calls = []
    m = machine(planner=lambda *a: planner_calls.append(a))
    m.request(stop=True)
    for s in (0, 1):
        m.server_paused(s, 3, [0, 1], still_training)
    m.worker_stopped(0, record(0), still_training)
    assert m.worker_stopped(1, record(1), still_training) == [AskWrite(3)]
    m.server_wrote(0, {"index": 0}, still_training)
    publish, verdict = m.server_wrote(1, {"index": 1}, still_training)
    assert publish.stop and verdict.stop and verdict.moves is None and planner_calls == []


def test_moves_change_the_placement_and_reach_parked_workers():
    """The planner's moves give the next epoch; a worker that finished is parked and
    takes part."""
    m = machine(planner=lambda label, requested, p: moves if requested else None)
    w = m.placement.layouts[0]
    mine = np.unique(w.partition_of(w.keys_of(0)))[:50]
    moves = Moves(mine.astype(np.int64), np.ones(50, np.int32))
    m.request(move=True)
    done = {"index": 1, "step": 4, "finished": True, "samples": 1, "loss": 0.0}
    for s in (0, 1):
        m.server_paused(s, 4, [0], {1: done}.get)
    (v,) = m.worker_stopped(0, record(0), {1: done}.get)
    assert v.moves is moves and v.placement.epoch == 1 == m.placement.epoch
    assert v.parked == (1,) and v.moved_rows > 0


def test_a_pause_waits_for_a_worker_that_has_not_finished_yet():
    m = machine(workers=2)
    for s in (0, 1):
        m.server_paused(s, 4, [0], still_training)
    assert m.worker_stopped(0, record(0), still_training) == []
    done = {"index": 1, "step": 4, "finished": True, "samples": 1, "loss": 0.0}
    (v,) = m.check({1: done}.get)
    assert isinstance(v, Verdict)


def test_servers_that_disagree_are_a_protocol_error():
    m = machine()
    m.server_paused(0, 4, [0, 1], still_training)
    with pytest.raises(ProtocolError):
        m.server_paused(1, 5, [0, 1], still_training)


def test_the_final_checkpoint_is_published_once_every_worker_finished():
    m = machine()
    done = {w: {"index": w, "step": 9, "finished": True, "samples": 1, "loss": 0.0}
            for w in (0, 1)}
    assert m.server_wrote(0, {"index": 0, "step": 9, "final": True}, still_training) == []
    assert m.server_wrote(1, {"index": 1, "step": 9, "final": True}, still_training) == []
    (publish,) = m.check(done.get)
    assert publish.final and publish.step == 9


def test_replies_round_trip():
    moves = Moves(np.array([3, 9]), np.array([1, 0], np.int32), "join")
    for reply in (Reply(WRITE, 12), Reply(END), Reply(GO, 5, True, 3, moves)):
        got = Reply.decode(reply.encode())
        assert (got.kind, got.step, got.stop, got.epoch) == \
            (reply.kind, reply.step, reply.stop, reply.epoch)
        assert (got.moves is None) == (reply.moves is None)
    got = Reply.decode(Reply(GO, 5, False, 3, moves).encode())
    assert got.moves.partitions.tolist() == [3, 9] and got.moves.owners.tolist() == [1, 0]
    with pytest.raises(ProtocolError):
        Reply.decode(np.array([9, 0, 0, 0, -1]))


def test_the_planner_joins_drains_and_moves_on_schedule():
    """Standby server 2 joins at step 10, server 0 is drained at 20, the aid moves every
    15 steps; step 30 does both the aid and nothing else; other steps move nothing."""
    cfg = TrainConfig(standby=1, join_at=(10,), drain_at=("0:20",), move_every=15, seed=3)
    planner = Planner(cfg, active=2)
    p = Placement.start(SPECS, 3, 2)
    assert planner(9, False, p) is None
    joined = planner(10, False, p)
    assert joined.reason == "join" and set(joined.owners.tolist()) == {2}
    p = p.after(joined)
    drained = planner(20, False, p)
    assert drained.reason == "drain" and (p.pmap.owner[drained.partitions] == 0).all()
    p = p.after(drained)
    aid = planner(30, False, p)
    assert aid.reason == "aid" and len(aid) == AID_PARTITIONS
    assert 0 not in set(aid.owners.tolist())


def test_impossible_schedules_are_setting_errors():
    with pytest.raises(ConfigError, match="standby"):
        check_schedule(TrainConfig(join_at=(5,)), 2, 0)
    with pytest.raises(ConfigError, match="holds no partitions"):
        check_schedule(TrainConfig(standby=1, drain_at=("2:5",), join_at=(9,)), 2, 1)
    with pytest.raises(ConfigError, match="last one"):
        check_schedule(TrainConfig(drain_at=("0:5",)), 1, 0)
    check_schedule(TrainConfig(standby=1, join_at=(3,), drain_at=("0:5",)), 1, 1)
