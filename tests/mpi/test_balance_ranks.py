"""Balanced SSP and ASP workers across ranks (pytest-mpi): the board's counters hand out
every batch once, and a slow worker's batches go to the others."""
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from former import former
from mpips.board import ClockBoard
from mpips.data import share
from mpips.data.plan import plan_data
from mpips.job import train
from mpips.rowcache import RowCache
from textdata import libsvm_text

comm = MPI.COMM_WORLD


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(60)
def test_concurrent_takes_hand_out_every_position_once():
    """Every rank but the board's holder takes 300 positions from owners 0 and 1 at
    once: each position is handed out exactly once."""
    board = ClockBoard(comm, comm.Get_size() - 1)
    taken = [] if comm.Get_rank() == 0 else [(i % 2, board.take(i % 2)) for i in range(300)]
    every = sorted(t for part in comm.allgather(taken) for t in part)
    counters = board.counters()
    board.close()
    per_owner = 150 * (comm.Get_size() - 1)
    assert every == sorted([(o, p) for o in (0, 1) for p in range(per_owner)])
    assert counters[:2].tolist() == [per_owner, per_owner]


def bad_line_file(folder: Path) -> Path:
    """A libSVM file whose lines 5, 130 and 131 are bad, written by rank 0."""
    lines = libsvm_text(600, seed=3).splitlines(keepends=True)
    for i in (4, 129, 130):
        lines[i] = "bad\n"
    if comm.Get_rank() == 0:
        (folder / "d.txt").write_text("".join(lines))
    comm.Barrier()
    return folder / "d.txt"


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("data", ["synthetic", "text with bad lines"])
def test_every_rank_reads_every_share_from_node_memory(data, shared_dir):
    """The row cache: each rank fills its own share; any rank reads any share's batch
    exactly as the source gives it, also where skipped bad lines shorten a batch."""
    if data == "synthetic":
        cfg = former(synthetic_rows=5_000, table_rows=1 << 12, seed=2)
    else:
        cfg = former(data=str(bad_line_file(shared_dir)), format="libsvm", on_bad_line="skip",
                          test_fraction=0.1, table_rows=1 << 12)
    plan, n, size = plan_data(cfg), comm.Get_size(), 64
    shares = [share(*plan.train_range, w, n) for w in range(n)]
    cache = RowCache(comm, plan.train, shares, size)
    ok = cache.kept
    for owner, (lo, hi) in enumerate(shares):
        for b, want in enumerate(plan.train.batches(lo, hi, size)):
            got = cache.batch(owner, b)
            ok &= np.array_equal(got.keys, want.keys) and np.array_equal(got.labels,
                                                                        want.labels)
    comm.Barrier()
    cache.free()
    assert all(comm.allgather(bool(ok)))


def straggler_job(sync: str) -> dict:
    cfg = former(synthetic_rows=40_000, table_rows=1 << 16, epochs=2, batch_size=128,
                      seed=5, sync=sync, staleness=2, slow_worker="0:4",
                      progress_seconds=60.0)
    return train(cfg, comm, verbose=False).metrics


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sync", ["ssp", "async"])
def test_a_slow_workers_batches_go_to_the_others(sync):
    """Worker 0 four times slower: every batch is still trained exactly once, the others
    train more of them than it does, SSP's bound holds, and the fast workers take
    several batches a step (the slow one one)."""
    m = straggler_job(sync)
    ok = True
    if comm.Get_rank() == 0:
        samples, steps = m["worker_samples"], m["worker_steps"]
        ok = m["balance"] and m["samples"] == 2 * 32_000 == sum(samples)
        ok &= samples[0] < min(samples[1:]) and m["ssp_violations"] == 0
        ok &= samples[0] / steps[0] <= 128 < min(s / t for s, t in zip(samples[1:], steps[1:]))
        ok = (bool(ok), {k: m[k] for k in ("samples", "worker_samples", "worker_steps",
                                           "ssp_violations", "balance")})
    ok = comm.bcast(ok, root=0)
    assert ok[0], ok[1]
