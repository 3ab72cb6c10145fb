"""What one move of partitions costs: seconds of ``ShardStore.move`` for a given size,
with the taker's spare window rows touched beforehand (``ShardStore.touch_room``, as a
job that may rebalance does before its clock starts) or fresh.

Run under ``mpiexec -n 4`` (a scheduler rank that idles, 2 servers, 1 worker): each trial
builds the stores of one FM table with Adam (as ``mpips bench balance``: 2^21 rows of 17
columns), moves ``--mib`` MiB of server 0's partitions (in partition order) to server 1,
times it on both servers and frees everything; the modes alternate, ``--repeats`` times.

    mpiexec -n 4 python benchmarks/move_cost.py --mib 69 --repeats 5
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
from mpi4py import MPI

from mpips.client import TableClient
from mpips.models import TableSpec
from mpips.optim import Optimizer
from mpips.placement import Moves, Placement
from mpips.rebalance import partition_bytes
from mpips.store import ShardStore
from mpips.topology import SERVER, WORKER, split_roles

comm = MPI.COMM_WORLD


def moves(placement: Placement, spec: TableSpec, slots: int, mib: float) -> Moves:
    """Server 0's partitions, in partition order, up to ``mib`` MiB, all to server 1."""
    mine = np.flatnonzero(placement.pmap.owner == 0)
    size = partition_bytes([spec], slots)[mine]
    take = mine[np.cumsum(size) <= mib * 2**20]
    return Moves(take.astype(np.int64), np.ones(take.size, np.int32))


def trial(spec: TableSpec, optimizer: Optimizer, mib: float, touch: bool) -> float:
    """One move on fresh stores: the slower server's seconds (nan on other ranks)."""
    roles = split_roles(comm, 2)
    old = Placement.start([spec], 2, 2)
    new = old.after(moves(old, spec, len(optimizer.state_slots), mib))
    assert new.rebuilt == (), "the move does not fit the spare rows: use a smaller --mib"
    seconds = float("nan")
    if roles.role == SERVER:
        with ShardStore([spec], roles, optimizer, old) as store:
            store.init(0)
            store.touch_room(1 << 40 if touch else 0)
            store.ready()
            seconds = store.move(new).seconds
            store.windows.barrier()
    elif roles.role == WORKER:
        with TableClient([spec], roles, old) as client:
            client.ready()
            client.adopt(new)
            client.windows.barrier()
    roles.free()
    times = comm.allgather(seconds)
    return max(t for t in times if t == t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1 << 21)
    parser.add_argument("--dim", type=int, default=17)
    parser.add_argument("--mib", type=float, default=69.0, help="MiB of rows and state moved")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if comm.Get_size() != 4:
        raise SystemExit("run with mpiexec -n 4 (scheduler, 2 servers, 1 worker)")
    spec, optimizer = TableSpec("emb", args.rows, args.dim), Optimizer("adam", lr=0.01)
    runs: dict[str, list[float]] = {"fresh": [], "touched": []}
    for _ in range(args.repeats):
        for mode in runs:
            runs[mode].append(trial(spec, optimizer, args.mib, mode == "touched"))
    if comm.Get_rank() == 0:
        for mode, times in runs.items():
            print(f"{mode:8} {args.mib:g} MiB: median {statistics.median(times):.3f} s, "
                  f"all {' '.join(f'{t:.3f}' for t in times)}", flush=True)


if __name__ == "__main__":
    main()
