import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))


@pytest.fixture
def shared_dir():
    """A temporary folder every rank of COMM_WORLD sees (made and removed by rank 0)."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    path = Path(comm.bcast(tempfile.mkdtemp(prefix="mpips-") if comm.Get_rank() == 0
                           else None))
    yield path
    comm.Barrier()
    if comm.Get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)
