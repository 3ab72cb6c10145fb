"""Multi-rank tests (pytest-mpi): run as ``mpiexec -n N python -m pytest --with-mpi``.

Every test holds at any rank count >= its ``min_size``; verdicts that must hold on every rank
are allgathered, so a failure on one rank fails the test on all of them.
"""
from functools import partial

import numpy as np
import pytest
from mpi4py import MPI

from former import former
import reference as ref
from mpips.clocks import SyncPolicy
from mpips.config import TrainConfig
from mpips.data.plan import plan_data
from mpips.job import train
from mpips.kernels.init import normal_rows
from mpips.ring import mix64, name_salt
from mpips.models import TableSpec, build_model
from mpips.client import TableClient
from mpips.optim import Optimizer
from mpips.placement import Placement
from mpips.server import run_server
from mpips.store import ShardStore
from mpips.topology import SERVER, WORKER, split_roles
from mpips.waiting import wait_all
from mpips.wire import all_ranks

comm = MPI.COMM_WORLD
SPECS = [TableSpec("emb", 10007, 4), TableSpec("dense", 1, 33)]


def server_counts() -> list[int]:
    return sorted({1, min(2, comm.Get_size() - 2)})


def expected_value(keys: np.ndarray, dim: int) -> np.ndarray:
    return (keys[:, None] * 10 + np.arange(dim)).astype(np.float32)


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("pull", ["get", "direct"])
def test_pull_returns_exactly_what_servers_hold(pull):
    """Servers write known rows; workers' one-sided pulls return them, in request order."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    one_node = all(comm.allgather(node.Get_size() == comm.Get_size()))
    node.Free()
    if pull == "direct" and not one_node:
        pytest.skip("direct loads need every rank on one node")
    for n_servers in server_counts():
        roles = split_roles(comm, n_servers)
        placement = Placement.start(SPECS, n_servers, n_servers)
        ok = True
        if roles.role == SERVER:
            with ShardStore(SPECS, roles, Optimizer("sgd", lr=1.0), placement, pull) as store:
                for i, spec in enumerate(SPECS):
                    keys = placement.layouts[i].keys_of(roles.index)
                    store.rows(i)[:] = expected_value(keys, spec.dim)
                store.ready()
        elif roles.role == WORKER:
            with TableClient(SPECS, roles, placement, pull) as client:
                client.ready()
                rng = np.random.default_rng(roles.index)
                for spec in SPECS:
                    keys = rng.permutation(np.unique(rng.integers(0, spec.rows, 3000)))
                    out = np.empty((keys.size, spec.dim), np.float32)
                    client.pull(spec.name, client.route(spec.name, keys), out)
                    ok &= np.array_equal(out, expected_value(keys, spec.dim))
        comm.Barrier()
        roles.free()
        assert all_ranks(comm, ok), f"pull ({pull}) differs with {n_servers} server(s)"


def worker_grads(w: int, spec: TableSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + w)
    keys = rng.permutation(np.unique(rng.integers(0, spec.rows, min(spec.rows, 500))))
    return keys, rng.normal(size=(keys.size, spec.dim)).astype(np.float32)


def reference_update(spec: TableSpec, n_workers: int, optimizer: str) -> np.ndarray:
    """Two steps of every worker's ``worker_grads``, summed and applied in NumPy."""
    w = np.zeros((spec.rows, spec.dim), np.float32)
    update = ref.Updater(optimizer, 0.1, 0.01, l1=0.01)
    for step in range(2):
        total = np.zeros_like(w)
        touched = np.zeros(spec.rows, bool)
        for k in range(n_workers):
            keys, g = worker_grads(k + 10 * step, spec)
            total[keys] += g
            touched[keys] = True
        update(spec.name, w, np.flatnonzero(touched), total, step + 1)
    return w


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(120)
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam", "ftrl"])
def test_push_and_update_match_numpy(optimizer):
    """Two steps of pushes from every worker equal the NumPy update of the summed rows."""
    opt = Optimizer(optimizer, lr=0.1, l2=0.01, l1=0.01)
    for n_servers in server_counts():
        roles = split_roles(comm, n_servers)
        placement = Placement.start(SPECS, n_servers, n_servers)
        ok = True
        if roles.role == SERVER:
            with ShardStore(SPECS, roles, opt, placement) as store:
                run_server(store, [SyncPolicy(), SyncPolicy()])
        elif roles.role == WORKER:
            with TableClient(SPECS, roles, placement) as client:
                client.ready()
                for step in range(2):
                    grads = {}
                    for spec in SPECS:
                        keys, g = worker_grads(roles.index + 10 * step, spec)
                        grads[spec.name] = (client.route(spec.name, keys), g)
                    client.read_versions()
                    client.push(step, step == 1, grads).wait()
                wait_all([roles.group.Ibarrier()])
                for spec in SPECS:
                    expect = reference_update(spec, roles.n_workers, optimizer)
                    got = client.pull_all()[spec.name]
                    ok &= np.allclose(got, expect, rtol=1e-5, atol=1e-7)
        comm.Barrier()
        roles.free()
        assert all_ranks(comm, ok), f"{optimizer} update differs with {n_servers} server(s)"


def small_config(**kw) -> TrainConfig:
    base = dict(synthetic_rows=3000, table_rows=4096, batch_size=97, epochs=2, lr=0.1,
                progress_seconds=60.0, seed=5, l2=0.0)     # the references have no L2
    base.update(kw)
    return former(**base)


CASES = {
    "even": {},
    # 49 train rows in batches of 4: 2 or 3 workers get different numbers of steps.
    "uneven": dict(synthetic_rows=61, batch_size=4),
    # 2 train rows: with 3 workers one has none and only sends its final, empty push.
    "tiny": dict(synthetic_rows=4, test_fraction=0.5, batch_size=1),
}


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(180)
@pytest.mark.parametrize("case,optimizer,pull", [
    ("even", "sgd", "auto"), ("even", "adagrad", "auto"), ("uneven", "adagrad", "get"),
    ("tiny", "sgd", "auto"), ("even", "adam", "auto"), ("uneven", "ftrl", "auto")])
def test_bsp_lr_matches_one_process_numpy(case, optimizer, pull):
    """k BSP steps of LR over S servers and W workers equal the NumPy reference (1e-6),
    with uneven shares and empty shares too, reading shards directly or with MPI Get."""
    for n_servers in server_counts():
        cfg = small_config(servers=n_servers, optimizer=optimizer, pull=pull, **CASES[case])
        result = train(cfg, comm, return_params=True)
        ok = True
        if result.role == WORKER:
            data = plan_data(cfg)
            workers = comm.Get_size() - 1 - n_servers
            expect = ref.bsp_lr(data.train, data.train_range, workers, cfg.table_rows,
                                cfg.batch_size, cfg.epochs, cfg.lr, optimizer,
                                seed=cfg.seed)
            for name, arr in expect.items():
                ok &= np.allclose(result.params[name], arr, rtol=0, atol=1e-6)
                ok &= bool(np.abs(arr).max() > 0)           # training did move the weights
        assert all_ranks(comm, ok), f"BSP LR ({case}, {optimizer}, {pull}) differs with " \
            f"{n_servers} server(s)"


@pytest.mark.mpi(min_size=3)
@pytest.mark.timeout(180)
@pytest.mark.parametrize("model,optimizer", [("fm", "adagrad"), ("fm", "adam"),
                                             ("deepfm", "adagrad")])
def test_bsp_fm_and_deepfm_match_one_process_numpy(model, optimizer):
    """k BSP steps of FM and DeepFM (seeded initial rows) equal a NumPy reference written by
    the textbook definitions, to float32 rounding: 1e-6 absolute for FM with Adagrad, 1e-5
    where normalised steps magnify rounding in near-zero gradients: Adam, and DeepFM, whose
    MLP sums can leave a float32 residue of ~1e-12 where the float64 gradient is exactly 0,
    which Adagrad (eps 1e-10) turns into a step of ~1e-6. The first-order weights learn at
    their own rate (--linear-lr 0.2), as the reference's updater does."""
    atol = 1e-6 if (model, optimizer) == ("fm", "adagrad") else 1e-5
    for n_servers in server_counts():
        cfg = small_config(servers=n_servers, optimizer=optimizer, model=model,
                           embedding_dim=4, init_std=0.1, epochs=1, lr=0.05, hidden=(6, 5),
                           linear_lr=0.2)
        result = train(cfg, comm, return_params=True)
        ok = True
        if result.role == WORKER:
            data = plan_data(cfg)
            workers = comm.Get_size() - 1 - n_servers
            spec = build_model(model, cfg.table_rows, 4, cfg.init_std, 39, cfg.hidden)
            start = {t.name: initial_values(cfg, t) for t in spec.tables}
            grad = ref.sparse_grad(ref.fm_grad) if model == "fm" else \
                partial(ref.deepfm_grad, layers=spec.layers)
            expect = ref.bsp(data.train, data.train_range, workers, start, grad,
                             cfg.batch_size, cfg.epochs,
                             ref.Updater(optimizer, cfg.lr, first={"features": cfg.linear_lr}),
                             seed=cfg.seed)
            for name, arr in expect.items():
                ok &= np.allclose(result.params[name], arr, rtol=1e-5, atol=atol)
        assert all_ranks(comm, ok), f"BSP {model} ({optimizer}) differs with {n_servers} server(s)"


def initial_values(cfg: TrainConfig, spec: TableSpec) -> np.ndarray:
    """The servers' seeded initial rows of a table, made in one process."""
    out = np.zeros((spec.rows, spec.dim), np.float32)
    if spec.init_std > 0:
        salt = np.uint64(mix64(np.uint64(cfg.seed) ^ np.uint64(name_salt(spec.name, 1 << 62))))
        normal_rows(out, np.arange(spec.rows, dtype=np.int64), spec.init_from, spec.init_std,
                    salt)
    return out


@pytest.mark.mpi(min_size=4)
@pytest.mark.timeout(180)
@pytest.mark.parametrize("model", ["lr", "fm", "deepfm"])
def test_results_identical_when_repeated_and_with_one_or_two_servers(model):
    """Same workers: 2 servers twice, 1 server, 2 servers pulling with MPI Get; parameters
    and AUC are bit-identical (FM's seeded initial rows included)."""
    size = comm.Get_size()
    results = []
    for n_servers, pull in ((2, "auto"), (2, "auto"), (1, "auto"), (2, "get")):
        # Two servers use every rank; one server uses all but the last, same worker count.
        sub = comm.Split(0 if comm.Get_rank() < size - 2 + n_servers else MPI.UNDEFINED)
        cfg = small_config(servers=n_servers, pull=pull, model=model, embedding_dim=4,
                           hidden=(6, 5))
        res = train(cfg, sub, return_params=True) if sub != MPI.COMM_NULL else None
        first_worker = 1 + n_servers
        params = res.params if res is not None and comm.Get_rank() == first_worker else None
        metrics = res.metrics if res is not None and comm.Get_rank() == 0 else None
        results.append((comm.bcast(params, root=first_worker), comm.bcast(metrics, root=0)))
        if sub != MPI.COMM_NULL:
            sub.Free()
    (p2, m2), *others = results
    ok = all(np.array_equal(p2[k], p[k]) and m2["auc"] == m["auc"]
             for p, m in others for k in p2)
    assert all_ranks(comm, ok)
