"""Partitions moving between servers while a job runs (pytest-mpi): BSP stays bit-identical
to a run without moves, SSP and ASP train every planned row, a resumed job takes up the
saved placement, and a push built for an old placement never touches the new rows.

Run under MPICH with ``MPIR_CVAR_NOLOCAL=1`` too (the Makefile does): every rank is then
its own node, so pulls are one-sided ``Get`` and moves cross the network module.
"""
import os

import numpy as np
import pytest
from mpi4py import MPI

from former import former
from ranks import run, same_params
from mpips.client import TableClient
from mpips.clocks import Start, SyncPolicy
from mpips.config import TrainConfig
from mpips.errors import ProtocolError
from mpips.message import PushMessage, TablePart, encode
from mpips.models import TableSpec
from mpips.optim import Optimizer
from mpips.placement import Moves, Placement, join
from mpips.ring import route
from mpips.serving import ServerMachine
from mpips.store import ShardStore
from mpips.topology import SERVER, TAG_PUSH, WORKER, split_roles
from mpips.waiting import idle_poll
from mpips.wire import all_ranks

comm = MPI.COMM_WORLD
NOLOCAL = os.environ.get("MPIR_CVAR_NOLOCAL") == "1"


def small(**kw) -> TrainConfig:
    base = dict(synthetic_rows=3000, table_rows=4096, batch_size=97, epochs=2, lr=0.1,
                progress_seconds=60.0, seed=5, servers=1, standby=1, embedding_dim=4,
                hidden=(6, 5))
    base.update(kw)
    return former(**base)


@pytest.mark.mpi(min_size=2)
def test_nolocal_makes_every_rank_its_own_node():
    """The multi-node mode really is on when the environment asks for it."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    alone = node.Get_size() == 1
    node.Free()
    assert alone or not NOLOCAL






@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("model", ["lr", "fm", "deepfm"])
def test_bsp_is_bit_identical_with_moves_a_join_and_a_drain(model):
    """One server and one standby. Against the run where the standby stays idle: the
    standby joins at step 3 and seeded partitions move every 4 steps; or it joins and
    the first server is drained at step 9. Parameters and AUC are bit-identical, the
    join moves about half of the partitions, all onto the standby, and the drained
    server ends with none."""
    base_params, base = run(small(model=model))
    moved_params, moved = run(small(model=model, join_at=(3,), move_every=4))
    drained_params, drained = run(small(model=model, join_at=(3,), drain_at=("0:9",)))
    assert base["map_epoch"] == 0 and base["partition_moves"] == 0
    assert same_params(base_params, moved_params) and moved["auc"] == base["auc"]
    assert same_params(base_params, drained_params) and drained["auc"] == base["auc"]
    assert moved["standby_joined"] == 1 and moved["moves"] >= 3
    first = moved["partition_moves"] - (moved["moves"] - 1) * 2048    # the join's share
    assert 0.45 * 65536 < first < 0.55 * 65536
    assert drained["moves"] == 2 and drained["map_epoch"] == 2
    assert drained["partition_moves"] == 65536 and drained["moved_rows"] > 0
    assert all(s >= 0 for s in drained["move_pause_seconds"])


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(120)
def test_a_job_that_never_moves_still_reports_its_partitions_load():
    """The measured load is every job's, not only the rebalancer's: with ``--rebalance
    off`` the workers still count what each partition gives them, so the final record
    shares the load out over both servers and names the hottest partitions."""
    _, metrics = run(small(servers=2, standby=0, rebalance="off"))
    assert metrics["rebalance"] is False and metrics["moves"] == 0
    assert len(metrics["server_load"]) == 2 and min(metrics["server_load"]) > 0
    assert sum(metrics["server_load"]) == pytest.approx(1.0, abs=1e-3)
    assert metrics["hot_partitions"] and metrics["hot_partitions"][0][1] > 0


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sync", ["ssp", "async"])
def test_ssp_and_asp_with_moves_train_every_planned_row(sync):
    """Moves while workers run at their own pace (balanced, with random delays): every
    planned sample is trained once and the AUC is within 0.01 of the run without."""
    cfg = small(synthetic_rows=20_000, batch_size=128, sync=sync, staleness=2,
                delay_jitter=0.001, table_rows=1 << 14)
    _, still = run(cfg)
    _, moved = run(cfg.replace(join_at=(3,), move_every=5))
    assert moved["samples"] == still["samples"] == 2 * 16_000
    assert moved["moves"] >= 2 and moved["ssp_violations"] == 0
    assert abs(moved["auc"] - still["auc"]) < 0.01, (moved["auc"], still["auc"])


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(300)
def test_a_resumed_job_takes_up_the_saved_placement(shared_dir):
    """A checkpoint written after a join and a move holds the map and its epoch; resumed
    on the same servers, the job carries on from that placement and ends bit-identical
    to the run that never stopped, at the same epoch."""
    cfg = small(model="fm", join_at=(3,), move_every=4, checkpoint_every=6,
                checkpoint_keep=10, checkpoint_dir=str(shared_dir))
    full_params, full = run(cfg.replace(run_name="full"))
    step6 = shared_dir / "full" / "step-00000006"
    again_params, again = run(cfg.replace(run_name="again", resume=str(step6)))
    assert same_params(full_params, again_params)
    assert again["map_epoch"] == full["map_epoch"] > 2 and again["resumed_from_step"] == 6


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(120)
def test_a_push_for_an_old_placement_never_touches_the_new_rows():
    """Partitions move (epoch 0 -> 1); a worker then sends a push routed with epoch 0's
    layout. The server refuses it with an error naming both epochs, and not one of its
    rows changes."""
    specs = [TableSpec("emb", 5000, 2)]
    roles = split_roles(comm, 1, standby=1) if comm.Get_size() >= 4 else split_roles(comm, 1)
    old = Placement.start(specs, roles.n_servers, roles.active_servers)
    new = old.after(join(old, 1) if roles.n_servers > 1 else Moves.none())
    ok = True
    if roles.role == SERVER:
        with ShardStore(specs, roles, Optimizer("sgd", lr=1.0), old) as store:
            store.init(0)
            store.rows(0)[:] = 1.0
            store.ready()
            store.move(new)
            before = store.rows(0).copy()
            machine = ServerMachine([SyncPolicy()], Start.fresh(roles.n_workers), new.epoch)
            for _ in range(roles.n_workers):
                try:
                    machine.on_message(idle_poll(store.poll))
                    ok = False
                except ProtocolError as exc:
                    ok &= "epoch 0" in str(exc) and f"epoch {new.epoch}" in str(exc)
            ok &= bool(np.array_equal(before, store.rows(0))) and machine.applied == 0
            store.windows.barrier()
    elif roles.role == WORKER:
        with TableClient(specs, roles, old) as client:
            client.ready()
            client.adopt(new)
            keys = np.arange(0, 5000, 7, dtype=np.int64)
            where = route(old.layouts[0], keys)             # the old layout's offsets
            rows = np.full((keys.size, 2), 100.0, np.float32)
            for s in range(roles.n_servers):
                lo, hi = where.bounds[s], where.bounds[s + 1]
                offsets = np.sort(where.offsets[lo:hi])         # a message's keys ascend
                part = TablePart(0, 0, offsets, rows[lo:hi])
                msg = encode(PushMessage(roles.index, 0, 0, old.epoch, [part]), [2])
                client.outbox.post(roles.ps, [msg], [roles.server_ps_rank(s)], TAG_PUSH)
            client.outbox.flush()
            client.windows.barrier()
    comm.Barrier()
    roles.free()
    assert all_ranks(comm, ok)
