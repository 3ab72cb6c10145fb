"""The push protocol over ``ps``, both sides: a worker sends each server one encoded
message (``message``) per step and waits for the acks; a server receives a message when
one has arrived and acknowledges the pushes it applied.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from mpi4py import MPI

from .errors import ProtocolError
from .message import PushMessage, decode
from .topology import TAG_ACK, TAG_PUSH, Roles
from .waiting import wait_all


class Outbox:
    """Nonblocking sends whose buffers stay alive until the sends complete."""

    def __init__(self) -> None:
        self._pending: list[tuple[list[MPI.Request], list[np.ndarray]]] = []

    def post(self, comm: MPI.Comm, buffers: Sequence[np.ndarray], dests: Sequence[int],
             tag: int) -> None:
        """Send ``buffers[i]`` to ``dests[i]``."""
        reqs = [comm.Isend(b, d, tag) for b, d in zip(buffers, dests)]
        self._pending = [(r, b) for r, b in self._pending if not MPI.Request.Testall(r)]
        self._pending.append((reqs, list(buffers)))

    def flush(self) -> None:
        """Wait until every send has completed."""
        for reqs, _ in self._pending:
            wait_all(reqs)
        self._pending = []


@dataclass
class PushHandle:
    """A push in flight: ``wait()`` returns once every server has applied it."""

    acks: list[MPI.Request]
    buffers: list[np.ndarray] = field(default_factory=list)

    def wait(self) -> None:
        wait_all(self.acks)


# ---- worker side -------------------------------------------------------------------------
def send_push(roles: Roles, outbox: Outbox, messages: Sequence[np.ndarray]) -> PushHandle:
    """Send server ``s`` its encoded message ``messages[s]``; the handle waits for every
    server's ack. The ack receives are posted first, so no ack waits unmatched."""
    ps = roles.ps
    acks = np.zeros((roles.n_servers, 1), dtype=np.int64)
    handle = PushHandle([ps.Irecv(acks[s], roles.server_ps_rank(s), TAG_ACK)
                         for s in range(roles.n_servers)], [acks])
    outbox.post(ps, messages, [roles.server_ps_rank(s) for s in range(roles.n_servers)],
                TAG_PUSH)
    return handle


def send_mark(roles: Roles, outbox: Outbox, message: np.ndarray) -> None:
    """Send every server the same encoded mark (no ack comes back)."""
    outbox.post(roles.ps, [message] * roles.n_servers,
                [roles.server_ps_rank(s) for s in range(roles.n_servers)], TAG_PUSH)


# ---- server side -------------------------------------------------------------------------
def poll_push(roles: Roles, dims: Sequence[int]) -> PushMessage | None:
    """One worker's message if one has arrived, else None (never blocks long). A header
    naming another worker than the sender is a ``ProtocolError``."""
    status = MPI.Status()
    ps = roles.ps
    if not ps.Iprobe(MPI.ANY_SOURCE, TAG_PUSH, status):
        return None
    source = status.Get_source()
    buf = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
    ps.Recv([buf, MPI.BYTE], source, TAG_PUSH)
    msg = decode(buf, dims)
    if msg.worker != roles.ps_worker(source):
        raise ProtocolError(f"a push from worker {roles.ps_worker(source)} names worker "
                            f"{msg.worker}")
    return msg


def send_acks(roles: Roles, outbox: Outbox, pushes: Sequence[PushMessage]) -> None:
    """Tell each pushing worker that its step is applied."""
    steps = [np.array([p.step], dtype=np.int64) for p in pushes]
    outbox.post(roles.ps, steps, [roles.worker_ps_rank(p.worker) for p in pushes], TAG_ACK)
