"""Recovery plans without processes: who died decides whether the job ends, drops workers
or reloads a server's partitions (the ring's minimum, from the last checkpoint); pushes in
flight are settled whole or not at all (the servers' rows are kept only then); a series
of failures must end within the deadline. And the ``--kill-at`` test aid's setting."""
import numpy as np
import pytest
from mpi4py import MPI

from mpips import waiting

from mpips.config import TrainConfig
from mpips.errors import ConfigError, TopologyError
from mpips.faults import FAILURE_CLASSES, PeerFailure, is_failure, ulfm_enabled
from mpips.job import recovery_source
from mpips.killing import KillSwitch
from mpips.models import TableSpec
from mpips.placement import Moves, Placement, drain
from mpips.recovery import (FINISHED, RECOVERY_DEADLINE, DropWorkers, End, Held, JobShape,
                            Recoveries, ReloadServers, Survivors, ending, kept_steps,
                            live_map, owned_rows, plan, survivors)
from mpips.topology import SCHEDULER, SERVER, WORKER, world_role

SPECS = [TableSpec("emb", 100_003, 3), TableSpec("bias", 1, 1)]


def shape(pacing: str = "bsp", servers: int = 3, workers: int = 3, standby: int = 0,
          checkpoint: int | None = 40) -> JobShape:
    """A job of ``servers`` server ranks (the last ``standby`` of them without partitions)."""
    placement = Placement.start(SPECS, servers, servers - standby)
    return JobShape(servers, workers, pacing, placement, checkpoint)


def test_scheduler_death_ends_the_job_with_a_resume_hint():
    """Rank 0 holds the board: nobody can take over, the job ends and says --resume."""
    for dead in ([0], [0, 5]):
        (action,) = plan(shape(), dead, step=60)
        assert isinstance(action, End) and "scheduler" in action.message
        assert "--resume" in action.message


def test_worker_death_drops_only_the_dead_workers():
    """World ranks 4..6 are workers 0..2 with 3 servers; a dead worker is dropped, nothing
    is reloaded; all workers dead ends the job."""
    assert plan(shape(), [5], step=60) == [DropWorkers((1,))]
    assert plan(shape(), [6, 4], step=60) == [DropWorkers((0, 2))]
    (end,) = plan(shape(), [4, 5, 6], step=60)
    assert isinstance(end, End) and "every worker" in end.message


def test_server_death_reloads_its_partitions_at_the_rings_minimum():
    """Only the dead server's partitions move, each to its owner in the ring over the
    survivors (what a drain gives), with the rows they hold; BSP rolls everyone back."""
    job = shape("bsp")
    (reload,) = plan(job, [2], step=60)          # world rank 2 is server 1
    assert isinstance(reload, ReloadServers) and reload.servers == (1,)
    owner = job.placement.pmap.owner
    np.testing.assert_array_equal(reload.moves.partitions, np.flatnonzero(owner == 1))
    expected = drain(job.placement, 1)
    np.testing.assert_array_equal(reload.moves.owners, expected.owners)
    assert not np.isin(reload.moves.owners, [1]).any()
    assert reload.rows == owned_rows(job.placement, np.flatnonzero(owner == 1))
    total = sum(s.rows for s in SPECS)
    assert 0.2 * total < reload.rows < 0.5 * total          # about a third of the rows
    assert reload.rollback_all and reload.checkpoint_step == 40 and reload.steps_back == 20


def test_ssp_and_async_reload_only_the_dead_servers_rows():
    """Under SSP/ASP nobody else goes back: the plan reports the steps the rows lost."""
    for pacing in ("ssp", "async"):
        (reload,) = plan(shape(pacing), [1], step=75)
        assert not reload.rollback_all and reload.steps_back == 35


def test_two_servers_and_a_worker_at_once():
    """Workers are dropped first; both servers' partitions go to the one survivor."""
    job = shape("async", servers=3, workers=2)
    drop, reload = plan(job, [1, 3, 5], step=50)
    assert drop == DropWorkers((1,))
    assert reload.servers == (0, 2)
    assert set(reload.moves.owners.tolist()) == {1}
    assert reload.moves.partitions.size == int((job.placement.pmap.owner != 1).sum())


def test_standby_server_death_reloads_nothing():
    """A standby server holds no partitions: no rows move, nobody rolls back."""
    (reload,) = plan(shape("bsp", standby=1, checkpoint=None), [3], step=12)
    assert reload.servers == (2,) and reload.rows == 0 and len(reload.moves) == 0
    assert not reload.rollback_all and reload.steps_back == 0


def test_server_death_without_a_checkpoint_or_survivor_ends():
    """Rows with no copy cannot come back; nor can a job lose every server."""
    (end,) = plan(shape(checkpoint=None), [2], step=10)
    assert isinstance(end, End) and "--checkpoint-every" in end.message
    (end,) = plan(shape(), [1, 2, 3], step=10)
    assert isinstance(end, End) and "every server" in end.message


def test_unknown_rank_is_a_topology_error():
    with pytest.raises(TopologyError, match="world rank 9"):
        plan(shape(), [9], step=1)


def test_world_role():
    """The scheduler, then the servers, then the workers (what split_roles assigns)."""
    assert [world_role(r, 2, 2) for r in range(5)] == [
        ("scheduler", 0), ("server", 0), ("server", 1), ("worker", 0), ("worker", 1)]


def servers_at(*rounds: int) -> list[Held]:
    return [Held(SERVER, r) for r in rounds]


@pytest.mark.parametrize("held, expected", [
    (servers_at(9, 9, 9) + [Held(WORKER, 9), Held(WORKER, 9, pushed=True, index=2)], 9),
    (servers_at(9, 9, 9) + [Held(WORKER, 8, pushed=True)], 9),  # its ack of round 8 lost
    (servers_at(9, 9, 9) + [Held(WORKER, 5, done=True)], 9),    # it trained all its steps
    (servers_at(9, 8, 9) + [Held(WORKER, 9)], None),   # round 8 torn: applied on 2 of 3
    (servers_at(9, 9, 9) + [Held(WORKER, 8)], None),   # nothing out, yet a round behind
    (servers_at(9, 9, 9) + [Held(WORKER, 9), None], None),      # one kept nothing
])
def test_a_workers_death_keeps_the_rows_when_every_server_applied_the_same_rounds(
        held, expected):
    """Only workers died under BSP: the survivors go on from the servers' common round,
    unless a dead worker's push was applied on some servers only (torn), or a worker
    does not stand there."""
    survivors = [Held(SCHEDULER)] + held
    want = None if expected is None else [expected] * 3
    assert kept_steps(shape("bsp"), [5], survivors) == want


@pytest.mark.parametrize("pacing", ["ssp", "async"])
def test_free_pacing_keeps_the_rows_when_every_server_applied_each_workers_same_steps(
        pacing):
    """SSP and ASP: each worker goes on from the step after its last push applied, the
    same on every server; a push applied on some servers only (torn) goes back."""
    def servers(*ats):
        return [Held(SERVER, at=at) for at in ats]
    alive = [Held(WORKER, 12, index=0), Held(WORKER, 6, pushed=True, index=2)]
    whole = servers([12, 30, 7], [12, 30, 7], [12, 30, 7])
    assert kept_steps(shape(pacing), [5], [Held(SCHEDULER)] + whole + alive) == [12, 30, 7]
    torn = servers([12, 30, 7], [12, 29, 7], [12, 30, 7])     # worker 1's step 29
    assert kept_steps(shape(pacing), [5], [Held(SCHEDULER)] + torn + alive) is None
    done = servers([12, None, 7], [12, None, 7], [12, None, 7])    # worker 1 finished
    assert kept_steps(shape(pacing), [5], [Held(SCHEDULER)] + done + alive) \
        == [12, FINISHED, 7]
    late = servers([13, 30, 7], [13, 30, 7], [13, 30, 7])      # worker 0 has nothing out
    assert kept_steps(shape(pacing), [5], [Held(SCHEDULER)] + late + alive) is None


def test_a_servers_death_balanced_workers_or_mixed_tables_go_back_to_the_checkpoint():
    """A server's rows died with it; the batches a dead balanced worker took from the
    pool, and pushes applied outside BSP rounds, are not counted: then the rows are not
    kept (every rank goes back to the checkpoint)."""
    held = [Held(SCHEDULER)] + servers_at(9, 9, 9) + [Held(WORKER, 9, index=w)
                                                      for w in (0, 2)]
    assert kept_steps(shape("bsp"), [5], held) == [9] * 3
    assert kept_steps(shape("bsp"), [2], held) is None
    assert kept_steps(shape("bsp"), [2, 5], held) is None
    uncounted = JobShape(3, 3, "ssp", shape().placement, 40, countable=False)
    assert kept_steps(uncounted, [5], held) is None


@pytest.mark.parametrize("pacing", ["ssp", "async"])
def test_free_pacing_keeps_the_survivors_rows_when_a_server_dies(pacing):
    """SSP and ASP: a server's death sends back only its rows; the surviving servers keep
    theirs when they applied the same pushes of every worker (a push out on the dead
    server only is redone), and go back when one applied a push the other did not."""
    alive = [Held(WORKER, 12, index=0), Held(WORKER, 29, pushed=True, index=1),
             Held(WORKER, 7, index=2)]
    whole = [Held(SERVER, at=[12, 30, 7])] * 2
    assert kept_steps(shape(pacing), [2], [Held(SCHEDULER)] + whole + alive) == [12, 30, 7]
    assert kept_steps(shape(pacing), [2, 5], [Held(SCHEDULER)] + whole
                      + alive[::2]) == [12, 30, 7]
    torn = [Held(SERVER, at=[12, 30, 7]), Held(SERVER, at=[12, 29, 7])]
    assert kept_steps(shape(pacing), [2], [Held(SCHEDULER)] + torn + alive) is None
    assert kept_steps(shape("bsp"), [2], [Held(SCHEDULER)] + servers_at(9, 9)
                      + [Held(WORKER, 9, index=w) for w in range(3)]) is None
    pooled = JobShape(3, 3, pacing, shape().placement, 40, pooled=True)  # balanced workers
    assert kept_steps(pooled, [2], [Held(SCHEDULER)] + whole + alive) == [12, 30, 7]
    assert kept_steps(pooled, [2, 5], [Held(SCHEDULER)] + whole + alive[::2]) is None


def test_live_map_gives_only_the_dead_servers_partitions_to_the_ring_of_survivors():
    """The survivors keep every partition they hold, moves and all; the dead server's go
    where the ring over the survivors that hold partitions puts them (a drain's choice,
    never onto a standby), and servers are numbered anew in order."""
    start = Placement.start(SPECS, 4, 3)                        # server 3 stands by
    moved = start.after(Moves(np.array([0, 5, 9]), np.array([2, 2, 0], np.int32)))
    owner = moved.pmap.owner
    new, reload = live_map(owner, 4, [1])
    np.testing.assert_array_equal(reload, np.flatnonzero(owner == 1))
    renumber = np.array([0, -1, 1, 2])
    keep = owner != 1
    np.testing.assert_array_equal(new[keep], renumber[owner[keep]])
    np.testing.assert_array_equal(new[reload], renumber[drain(moved, 1).owners])
    assert set(new[reload].tolist()) <= {0, 1}                  # not the standby (now 2)
    same, none = live_map(owner, 4, [3])                        # the standby died
    assert none.size == 0 and np.array_equal(same, owner)


def test_recoveries_count_and_time_each_failure():
    """Each completed recovery adds one failure survived, its reloaded rows, its seconds
    and how many steps the job went back."""
    rec = Recoveries()
    assert not rec.pending
    assert rec.failed(shape("ssp"), [5], step=10, now=100.0) == [DropWorkers((1,))]
    assert rec.pending and rec.recovered(30, 4, now=100.4) == pytest.approx(0.4)
    rec.failed(shape("ssp"), [2], step=50, now=200.0)
    rec.recovered(70, 10, now=201.5)
    assert rec.summary() == {"failures_survived": 2, "rows_reloaded": 100,
                             "recovery_seconds": pytest.approx([0.4, 1.5]),
                             "recovery_steps_back": [4, 10]}


def test_second_failure_during_recovery_replans_or_ends_in_time():
    """A failure while recovering plans again, within the series the first began;
    past the deadline since that first failure the series is overdue (the survivors then
    agree to end instead of trying forever)."""
    rec = Recoveries()
    rec.failed(shape("async"), [4], step=10, now=0.0)
    assert rec.failed(shape("async", workers=2), [2], step=12, now=1.0)[0].servers == (1,)
    assert rec.step == 10 and not rec.overdue(RECOVERY_DEADLINE - 0.5)
    assert rec.overdue(RECOVERY_DEADLINE + 0.5) and "--resume" in rec.overdue_message()
    rec.recovered(0, 0, now=2.0)
    assert not rec.overdue(RECOVERY_DEADLINE + 0.5)
    assert ending([End("x")]) == "x" and ending([DropWorkers((1,))]) is None
    with pytest.raises(ValueError):
        Recoveries().recovered(0, 0, now=1.0)


@pytest.mark.parametrize("dead,left", [
    ([5], Survivors(2, 1, 2, False)),          # a worker
    ([1, 6], Survivors(1, 1, 2, True)),        # an active server and a worker
    ([3], Survivors(2, 0, 3, True)),           # the standby server
])
def test_survivors_keep_their_roles_in_order(dead, left):
    """World ranks 1..3 are servers (the last one standby), 4..6 workers: what is left
    after ``dead`` died, as the settings the job goes on with."""
    assert survivors(shape(standby=1), 1, dead) == left


def test_kill_at_setting():
    """--kill-at RANK:STEP parses, names the rank, and refuses bad values in one line."""
    assert TrainConfig(kill_at="3:40").kill() == (3, 40)
    assert TrainConfig().kill() is None
    for bad in ("3", "a:1", "1:2:3", "-1:4"):
        with pytest.raises(ConfigError, match="--kill-at"):
            TrainConfig(kill_at=bad)
    assert KillSwitch.of((3, 40), 2).step is None
    switch = KillSwitch.of((3, 40), 3)
    assert switch.step == 40
    switch.reached(39)                        # not yet: returns


def test_ulfm_is_off_without_fault_tolerance(monkeypatch):
    """Only Open MPI with mpi_ft_enable (what --with-ft ulfm sets) turns the watch on; an
    MPI error of another class is no sign of a dead peer."""
    monkeypatch.delenv("OMPI_MCA_mpi_ft_enable", raising=False)
    assert not ulfm_enabled()
    assert is_failure(PeerFailure("revoked"))
    assert not is_failure(MPI.Exception(MPI.ERR_ARG)) and not is_failure(ValueError())
    if FAILURE_CLASSES:
        assert is_failure(MPI.Exception(min(FAILURE_CLASSES)))


def test_every_wait_calls_the_watch():
    """A watch that raises ends a wait that would never finish."""
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise PeerFailure("revoked")

    waiting.set_watch(check)
    try:
        with pytest.raises(PeerFailure):
            waiting.idle_wait(lambda: False)
    finally:
        waiting.set_watch(None)
    assert len(calls) == 3
    waiting.idle_wait(lambda: True)          # no watch: nothing called


def test_survivors_go_on_from_their_newest_checkpoint(tmp_path):
    """After a failure the job goes on from its own newest complete checkpoint, else from
    the one it resumed from, else from the start; a partial checkpoint does not count."""
    cfg = TrainConfig(checkpoint_every=5, checkpoint_dir=str(tmp_path), run_name="r")
    assert recovery_source(cfg) is None
    assert recovery_source(cfg.replace(resume="/elsewhere/step-00000010")) == \
        "/elsewhere/step-00000010"
    (cfg.run_dir / "step-00000005.partial").mkdir(parents=True)
    assert recovery_source(cfg) is None
    (cfg.run_dir / "step-00000005").mkdir()
    (cfg.run_dir / "step-00000005" / "manifest.json").write_text("{}")
    assert recovery_source(cfg) == "latest"
    assert recovery_source(cfg.replace(checkpoint_every=0)) is None
