"""JSON documents and integers between ranks (pytest-mpi), without pickle."""
import pytest
from mpi4py import MPI

from mpips.wire import all_ranks, allgather_json, bcast_json, gather_json, reduce_int

comm = MPI.COMM_WORLD


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(60)
def test_documents_and_numbers_reach_every_rank():
    rank, size = comm.Get_rank(), comm.Get_size()
    docs = [{"rank": r, "text": "é" * r, "list": list(range(r))} for r in range(size)]
    everyone = allgather_json(comm, docs[rank] if rank != 1 else None)
    gathered = gather_json(comm, docs[rank], root=size - 1)
    assert everyone == [d if d["rank"] != 1 else None for d in docs]
    assert gathered == (docs if rank == size - 1 else None)
    assert bcast_json(comm, {"from": rank} if rank == 1 else None, root=1) == {"from": 1}
    assert reduce_int(comm, rank) == size * (size - 1) // 2
    assert reduce_int(comm, rank, MPI.MAX) == size - 1
    assert all_ranks(comm, True) and not all_ranks(comm, rank != 0)
