"""Polite waiting: poll with back-off instead of spinning in a blocking MPI call.

Blocking MPI calls busy-poll; with more ranks than cores that steals the CPU from the ranks
doing the work, so every wait that may be long goes through here. A bulk transfer (a
partition move) is the exception: MPI moves its data only inside its calls, so it polls
without sleeping and only yields the core between polls (``transfer_all``).
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional, TypeVar

from mpi4py import MPI

T = TypeVar("T")
# The back-off starts at 20 us and doubles up to MAX_SLEEP, which keeps a step's hand-offs
# (push -> server, ack -> worker) fast; a rank that has waited LONG_WAIT already is idle
# (a server while workers read data, say) and backs off to IDLE_SLEEP, waking less often.
MAX_SLEEP = 2.5e-4
LONG_WAIT = 0.02
IDLE_SLEEP = 2e-3
# Under ULFM (``faults``) every wait also calls this, which raises once a peer has died.
_watch: Optional[Callable[[], None]] = None


def set_watch(check: Optional[Callable[[], None]]) -> None:
    """Make every wait call ``check`` between polls (None: no more)."""
    global _watch
    _watch = check


def idle_poll(poll: Callable[[], Optional[T]], max_sleep: float = MAX_SLEEP) -> T:
    """Call ``poll`` until it returns something, sleeping with back-off between calls
    (and calling the watch of ``set_watch``, if any, which may raise)."""
    sleep, slept, cap = 0.0, 0.0, max_sleep
    while (got := poll()) is None:
        if _watch is not None:
            _watch()
        time.sleep(sleep)
        slept += sleep
        if slept > LONG_WAIT:
            cap = max(max_sleep, IDLE_SLEEP)
        sleep = min(cap, sleep * 2 if sleep else 2e-5)
    return got


def idle_wait(done: Callable[[], bool], max_sleep: float = MAX_SLEEP) -> None:
    """Wait until ``done()`` is true, politely (see ``idle_poll``)."""
    idle_poll(lambda: True if done() else None, max_sleep)


def wait_all(requests: list[MPI.Request]) -> None:
    """Complete all ``requests`` politely (see ``idle_wait``)."""
    if requests:
        idle_wait(lambda: MPI.Request.Testall(requests))


def transfer_all(requests: list[MPI.Request]) -> None:
    """Complete ``requests`` that carry much data (rows of a move): test them again and
    again, yielding the core between tests (to any rank that wants it) but never sleeping.
    MPI copies a large message in chunks, only while a call of the sender and of the
    receiver progresses it, so ``wait_all``'s back-off (a 2 ms sleep once it has waited
    20 ms) would make a move crawl at a few chunks per sleep."""
    while requests and not MPI.Request.Testall(requests):
        if _watch is not None:
            _watch()
        os.sched_yield()
