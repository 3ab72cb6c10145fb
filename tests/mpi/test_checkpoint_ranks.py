"""Checkpoints across ranks: resuming onto more or fewer servers (pytest-mpi)."""
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from former import former
from mpips import slurm
from mpips.checkpoint import manifest
from mpips.checkpoint.layout import complete_steps, server_file
from mpips.checkpoint.saving import agree_restore, restore_server
from mpips.checkpoint.whole import saved_layout
from mpips.checkpoint.shardfile import ServerFile
from mpips.clocks import StalenessLog
from mpips.data.plan import plan_data
from mpips.job import model_of, train
from mpips.client import TableClient
from mpips.optim import Optimizer
from mpips.placement import Placement
from mpips.ring import PartitionMap
from mpips.store import ShardStore
from mpips.topology import SERVER, WORKER, split_roles
from mpips.wire import all_ranks
from saved import final_state

comm = MPI.COMM_WORLD


def sub(n: int):
    """The first ``n`` ranks as a communicator (None elsewhere)."""
    part = comm.Split(0 if comm.Get_rank() < n else MPI.UNDEFINED, comm.Get_rank())
    return None if part == MPI.COMM_NULL else part


def stored_table(step_dir: Path, doc: dict, name: str, what: str, rows: int, dim: int):
    """A whole table (or its state ``what``) rebuilt from every server file, by key."""
    out = np.full((rows, dim), np.nan, np.float32)
    files = [ServerFile(step_dir / server_file(e["index"]), e) for e in doc["servers"]]
    old = PartitionMap(files[0].read("owner"), len(files))
    layout = saved_layout(files, name, rows, old)
    for s, f in enumerate(files):
        keys, at = layout.held(s)
        out[keys] = f.read(f"tables/{name}/{what}")[at]
        f.close()
    return out


@pytest.mark.mpi(min_size=5)
@pytest.mark.timeout(300)
def test_resume_a_two_server_checkpoint_on_three_and_on_one(shared_dir):
    """A 2-server BSP checkpoint restored on 3 and on 1 server: every row and optimiser
    state value sits where the new ring puts it, and training goes on to parameters
    bit-identical to the run that never stopped."""
    cfg = former(model="fm", optimizer="adagrad", synthetic_rows=12_000, batch_size=256,
                      table_rows=1 << 13, embedding_dim=4, checkpoint_every=10,
                      checkpoint_keep=10, checkpoint_dir=str(shared_dir), seed=3)
    full = None
    four = sub(4)
    if four is not None:                        # 1 scheduler, 2 servers, 1 worker
        full = train(cfg.replace(servers=2, run_name="a"), four, return_params=True,
                     verbose=False).params
        four.Free()
    full = comm.bcast(full, root=3)                     # the worker's parameters
    step_dir = [p for p in complete_steps(shared_dir / "a")][-1]       # the first (step 10)
    doc = manifest.load(step_dir)
    assert doc["step"] == 10 and doc["ring"]["servers"] == 2
    model = model_of(cfg, plan_data(cfg))
    ok = True
    for n_servers in (3, 1):
        part = sub(n_servers + 2)
        if part is None:
            continue
        # The restore alone: each server's shard and state against the files, by key.
        roles = split_roles(part, n_servers)
        placement = Placement.start(model.tables, n_servers, n_servers)
        if roles.role == SERVER:
            with ShardStore(model.tables, roles, Optimizer("adagrad"), placement) as store:
                log = StalenessLog(store.names)
                agree_restore(part, [step_dir], cfg,
                              lambda d, p: restore_server(store, log, d, p))
                for i, spec in enumerate(model.tables):
                    keys = placement.layouts[i].keys_of(roles.index)
                    for what, arr in (("rows", store.rows(i)), *store.state_rows(i).items()):
                        want = stored_table(step_dir, doc, spec.name, what, spec.rows,
                                            spec.dim)[keys]
                        ok &= bool(np.array_equal(arr, want))
                store.ready()
        elif roles.role == WORKER:
            with TableClient(model.tables, roles, placement) as client:
                agree_restore(part, [step_dir], cfg)
                client.ready()
        else:
            agree_restore(part, [step_dir], cfg)
        roles.free()
        # Training on from the checkpoint.
        resumed = train(cfg.replace(servers=n_servers, run_name=f"r{n_servers}",
                                    resume=str(step_dir)), part, return_params=True,
                        verbose=False)
        if resumed.role == "worker":
            ok &= all(np.array_equal(full[k], resumed.params[k]) for k in full)
        if resumed.role == "scheduler":
            m = resumed.metrics
            ok &= m["resume_moved_rows"] == m["resume_moved_rows_minimum"] > 0
        part.Free()
    # On the same 2 servers: parameters, optimiser state and each server's table versions
    # end as in the run that never stopped.
    four = sub(4)
    if four is not None:
        again = train(cfg.replace(servers=2, run_name="r2", resume=str(step_dir)), four,
                      return_params=True, verbose=False)
        if again.role == "worker":
            ok &= all(np.array_equal(full[k], again.params[k]) for k in full)
        if again.role == "scheduler":
            want, got = final_state(shared_dir / "a"), final_state(shared_dir / "r2")
            ok &= want.keys() == got.keys() and any("versions" in k for k in want) and \
                all(np.array_equal(want[k], got[k]) for k in want)
        four.Free()
    assert all_ranks(comm, ok)


@pytest.mark.mpi(min_size=5)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sync", ["ssp", "async"])
def test_timed_checkpoints_under_ssp_and_asp_resume_to_the_end(shared_dir, sync):
    """Time-triggered checkpoints (the scheduler's request, a step named by the first
    worker to see it) under SSP and ASP, with a slow worker whose batches the other takes
    (``balance``); resuming one on 2 servers trains every remaining row once: the samples
    add up to the planned total, and the model is as good."""
    cfg = former(synthetic_rows=20_000, batch_size=128, sync=sync, staleness=2,
                      checkpoint_seconds=0.05, checkpoint_keep=50, delay_jitter=0.002,
                      slow_worker="0:3",
                      checkpoint_dir=str(shared_dir), seed=4, run_name=sync)
    four = sub(4)
    full = None
    if four is not None:
        full = train(cfg, four, verbose=False).metrics
        four.Free()
    full = comm.bcast(full, root=0)
    steps = complete_steps(shared_dir / sync)
    middle = [p for p in steps if not manifest.load(p)["final"]]
    assert middle, "no checkpoint before the end"
    doc = manifest.load(middle[len(middle) // 2])
    five = sub(5)
    res = train(cfg.replace(servers=2, run_name=sync + "-r", resume=str(middle[len(middle) // 2])),
                five, verbose=False)
    ok = True
    if res.role == "scheduler":
        m = res.metrics
        ok = m["samples"] == full["samples"] == 2 * 16_000 and \
            m["resumed_from_step"] == doc["step"] and abs(m["auc"] - full["auc"]) < 0.02
        ok &= any(w.get("carry") for w in doc["workers"])
        ok &= all("pool" in w for w in doc["workers"])
    five.Free()
    assert all_ranks(comm, ok)


@pytest.mark.mpi(min_size=5)
@pytest.mark.timeout(300)
def test_resume_on_more_and_fewer_workers(shared_dir):
    """A 2-worker BSP checkpoint taken mid-epoch, resumed by 3 workers and by 1: the rows
    the old workers had left in the epoch are shared out, then whole epochs of the new
    shares; every planned sample is trained once and the model is as good."""
    cfg = former(synthetic_rows=20_000, batch_size=128, checkpoint_every=25,
                      checkpoint_keep=50, checkpoint_dir=str(shared_dir), seed=6,
                      run_name="w2")
    four = sub(4)
    full = None
    if four is not None:                             # 1 scheduler, 1 server, 2 workers
        full = train(cfg, four, verbose=False).metrics
        four.Free()
    full = comm.bcast(full, root=0)
    step_dir = [p for p in complete_steps(shared_dir / "w2")
                if manifest.load(p)["step"] == 25][0]        # mid-epoch (63 steps each)
    ok = True
    for n_ranks in (5, 3):
        part = sub(n_ranks)
        if part is None:
            continue
        res = train(cfg.replace(run_name=f"w{n_ranks - 2}", resume=str(step_dir)), part,
                    verbose=False)
        if res.role == "scheduler":
            m = res.metrics
            ok &= m["samples"] == full["samples"] == 2 * 16_000
            ok &= m["workers"] == n_ranks - 2 and abs(m["auc"] - full["auc"]) < 0.01
        part.Free()
    assert all_ranks(comm, ok)


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sync", ["ssp", "async"])
def test_stop_signal_under_ssp_and_asp_checkpoints_and_resumes(shared_dir, sync, monkeypatch):
    """SIGUSR1 to the scheduler (rank 0) while balanced SSP or ASP workers train, one of
    them slow: the job stops after a checkpoint, before the end; the same job with
    ``--resume`` trains exactly the rows left."""
    monkeypatch.setitem(slurm._stop, "requested", False)     # restored after the test
    cfg = former(synthetic_rows=40_000, batch_size=128, sync=sync, staleness=2,
                      checkpoint_every=10**6, slow_worker="0:3", checkpoint_dir=str(shared_dir),
                      seed=8, run_name=sync, progress_seconds=60.0)
    if comm.Get_rank() == 0:
        slurm.catch_stop_signal()
        os.kill(os.getpid(), signal.SIGUSR1)
    first = train(cfg, comm, verbose=False).metrics
    monkeypatch.setitem(slurm._stop, "requested", False)
    second = train(cfg.replace(resume="latest"), comm, verbose=False).metrics
    ok = True
    if comm.Get_rank() == 0:
        ok = first["event"] == "stopped" and 0 < first["samples"] < 2 * 32_000
        ok &= second["event"] == "final" and second["samples"] == 2 * 32_000
        ok &= second["ssp_violations"] == 0 and second["balance"]
    assert all_ranks(comm, ok)
