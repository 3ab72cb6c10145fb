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

from .waiting import idle_wait, wait_all


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


def send_ints(comm: MPI.Comm, words: np.ndarray, dests: list[int], tag: int) -> None:
    """The same int64 array to every rank in ``dests`` (returns once all are sent)."""
    words = np.ascontiguousarray(words, dtype=np.int64)
    wait_all([comm.Isend(words, d, tag) for d in dests])


def wait_ints(comm: MPI.Comm, source: int, tag: int) -> np.ndarray:
    """An int64 array of any length from ``source``, waited for politely."""
    status = MPI.Status()
    idle_wait(lambda: comm.Iprobe(source, tag, status))
    words = np.empty(status.Get_count(MPI.INT64_T), dtype=np.int64)
    comm.Recv(words, source, tag)
    return words


def poll_any(comm: MPI.Comm) -> Optional[tuple[int, int, np.ndarray]]:
    """The next message for this rank from any rank with any tag, if one has arrived:
    (source, tag, its bytes). Taking every tag with one probe keeps each sender's
    messages in the order they were sent."""
    status = MPI.Status()
    if not comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status):
        return None
    buf = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
    comm.Recv([buf, MPI.BYTE], status.Get_source(), status.Get_tag())
    return status.Get_source(), status.Get_tag(), buf


def doc_of(buf: np.ndarray) -> Any:
    """A JSON document received as bytes (``send_json``)."""
    return _doc(buf)
