"""``mpips predict --servers S`` across ranks: servers hold the checkpoint's shards, the
workers score (pytest-mpi)."""
import numpy as np
import pytest
from mpi4py import MPI

from former import former
from mpips.job import train
from mpips.predict import prepare, run_predict
from mpips.predict_ranks import predict_ranks
from mpips.wire import all_ranks, bcast_json

comm = MPI.COMM_WORLD


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("model", ["lr", "deepfm"])
def test_servers_and_workers_score_like_one_process(shared_dir, model):
    """A model trained on 2 servers (1 at 3 ranks) and scored on 1 server and the other
    ranks as workers: the job's own test rows get the probabilities of one process to the
    bit, and the training job's AUC and log-loss."""
    n = comm.Get_size()
    cfg = former(model=model, synthetic_rows=60_000, batch_size=256, epochs=1,
                      table_rows=1 << 14, embedding_dim=4, hidden=(16, 8), seed=5,
                      servers=2 if n >= 4 else 1, checkpoint_every=100_000,
                      checkpoint_dir=str(shared_dir), run_name=model)
    final = bcast_json(comm, train(cfg, comm, verbose=False).metrics)
    out, ref = shared_dir / f"{model}.npy", shared_dir / f"{model}-one.npy"
    job = prepare(str(shared_dir / model), None, str(out) if comm.Get_rank() == 0 else None,
                  read=False)
    predict_ranks(job, 1, comm, progress_seconds=0.01)
    ok = True
    if comm.Get_rank() == 0:
        rec = run_predict(str(shared_dir / model), None, str(ref))
        ok = (rec["auc"], rec["logloss"]) == (final["auc"], final["logloss"]) \
            and np.array_equal(np.load(out), np.load(ref)) and np.load(out).size == 12_000
    assert all_ranks(comm, ok)
