"""Polite waiting: poll with back-off instead of spinning in a blocking MPI call.

Blocking MPI calls busy-poll; with more ranks than cores that steals the CPU from the ranks
doing the work, so every wait that may be long goes through here.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

from mpi4py import MPI

T = TypeVar("T")
# Longest sleep between polls. The back-off starts at 20 us; capping it here keeps a step's
# hand-offs (push -> server, ack -> worker) fast while an idle rank wakes only 4,000 times/s.
MAX_SLEEP = 2.5e-4


def idle_poll(poll: Callable[[], Optional[T]], max_sleep: float = MAX_SLEEP) -> T:
    """Call ``poll`` until it returns something, sleeping with back-off between calls."""
    sleep = 0.0
    while (got := poll()) is None:
        time.sleep(sleep)
        sleep = min(max_sleep, sleep * 2 if sleep else 2e-5)
    return got


def idle_wait(done: Callable[[], bool], max_sleep: float = MAX_SLEEP) -> None:
    """Wait until ``done()`` is true, politely (see ``idle_poll``)."""
    idle_poll(lambda: True if done() else None, max_sleep)


def wait_all(requests: list[MPI.Request]) -> None:
    """Complete all ``requests`` politely (see ``idle_wait``)."""
    if requests:
        idle_wait(lambda: MPI.Request.Testall(requests))
