"""Bytes between a worker and the servers, per table, as sent and as float32 would be; and
the ``--link-gbps`` test aid that makes a worker's messages wait for a slower link. Pure:
no MPI.

A push is counted as the bytes of its messages (header, delta-coded keys, coded rows), its
float32 counterpart as the same message with int64 keys and float32 rows; a pull as the
rows read (``4 * dim`` bytes a row; keys do not travel in a one-sided read), its float32
counterpart as every row the batch needed (the same, unless the pull cache served some).
Of a push's bytes, the keys alone are counted too (varints against 8 bytes a key), and
those of a worker's last push apart.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

KINDS = ("push_bytes", "push_bytes_raw", "pull_bytes", "pull_bytes_raw", "push_key_bytes",
         "push_key_bytes_raw", "push_bytes_last")
PROGRESS_KINDS = 4             # the first four travel in progress records


@dataclass
class Traffic:
    """Byte counts per table (``counts[kind][table]``, int64), since the worker started."""

    names: list[str]
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in KINDS:
            self.counts.setdefault(kind, np.zeros(len(self.names), dtype=np.int64))

    def add(self, kind: str, table: int, n: int) -> None:
        self.counts[kind][table] += n

    def progress(self) -> list[int]:
        """The totals a progress record carries (``PROGRESS_KINDS``)."""
        return [int(self.counts[kind].sum()) for kind in KINDS[:PROGRESS_KINDS]]

    def matrix(self) -> np.ndarray:
        """The counts as tables x ``KINDS`` (int64)."""
        return np.stack([self.counts[kind] for kind in KINDS], axis=1)

class Link:
    """The ``--link-gbps G`` test aid: every message of a worker waits ``bytes * 8 / G``
    nanoseconds, as on a link of G Gb/s that nothing else uses. Time overslept (a woken
    rank may wait for a core) is slept less later, so the link is as slow as asked on
    average, not slower. ``gbps`` 0: no limit."""

    def __init__(self, gbps: float) -> None:
        self.gbps, self._owed, self.waited = gbps, 0.0, 0.0

    def seconds(self, nbytes: int) -> float:
        """How long ``nbytes`` take on the link."""
        return 0.0 if self.gbps <= 0 else nbytes * 8 / (self.gbps * 1e9)

    def cross(self, nbytes: int) -> None:
        """Wait for ``nbytes`` to cross the link."""
        if self.gbps <= 0:
            return
        self._owed += self.seconds(nbytes)
        if self._owed > 0:
            began = time.perf_counter()
            time.sleep(self._owed)
            slept = time.perf_counter() - began
            self._owed -= slept
            self.waited += slept
