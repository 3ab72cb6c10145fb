"""What ranks tell each other besides tables and clocks: small JSON documents and flags.

mpi4py's lower-case calls serialise arbitrary Python objects, which a receiver would have
to trust; mpips uses none of them. Documents travel as UTF-8 JSON bytes, numbers as NumPy
buffers, so nothing a rank receives can run code. Waits go through ``waiting`` (no busy
polling on oversubscribed nodes).
"""
from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
from mpi4py import MPI

from .waiting import wait_all


def _bytes(doc: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)


def _doc(buf: np.ndarray) -> Any:
    return json.loads(buf.tobytes())


def send_json(comm: MPI.Comm, doc: Any, dest: int, tag: int) -> None:
    comm.Send([_bytes(doc), MPI.BYTE], dest, tag)


def poll_json(comm: MPI.Comm, tag: int) -> Optional[tuple[int, Any]]:
    """A document with ``tag`` from any rank, if one has arrived: (source, doc)."""
    status = MPI.Status()
    if not comm.Iprobe(MPI.ANY_SOURCE, tag, status):
        return None
    buf = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
    comm.Recv([buf, MPI.BYTE], status.Get_source(), tag)
    return status.Get_source(), _doc(buf)


def allgather_json(comm: MPI.Intracomm, doc: Any) -> list[Any]:
    """Collective: every rank's document, in rank order, on every rank."""
    mine = _bytes(doc)
    sizes = np.zeros(comm.Get_size(), dtype=np.int64)
    wait_all([comm.Iallgather(np.array([mine.size], np.int64), sizes)])
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    wait_all([comm.Iallgatherv([mine, MPI.BYTE], [out, sizes, MPI.BYTE])])
    ends = np.cumsum(sizes)
    return [_doc(out[e - n:e]) for e, n in zip(ends, sizes)]


def gather_json(comm: MPI.Intracomm, doc: Any, root: int = 0) -> Optional[list[Any]]:
    """Collective: every rank's document on ``root`` (None elsewhere)."""
    docs = allgather_json(comm, doc)
    return docs if comm.Get_rank() == root else None


def bcast_json(comm: MPI.Intracomm, doc: Any, root: int = 0) -> Any:
    """Collective: ``root``'s document on every rank."""
    data = _bytes(doc) if comm.Get_rank() == root else np.empty(0, np.uint8)
    size = np.array([data.size], dtype=np.int64)
    wait_all([comm.Ibcast(size, root)])
    buf = data if comm.Get_rank() == root else np.empty(int(size[0]), dtype=np.uint8)
    wait_all([comm.Ibcast([buf, MPI.BYTE], root)])
    return _doc(buf)


def reduce_int(comm: MPI.Intracomm, value: int, op: MPI.Op = MPI.SUM) -> int:
    """Collective: ``op`` of one integer over all ranks, on every rank."""
    out = np.zeros(1, dtype=np.int64)
    wait_all([comm.Iallreduce(np.array([value], np.int64), out, op)])
    return int(out[0])


def all_ranks(comm: MPI.Intracomm, flag: bool) -> bool:
    """Collective: is ``flag`` true on every rank?"""
    return reduce_int(comm, int(bool(flag)), MPI.MIN) == 1
