"""Progress of ``mpips prep`` over all ranks: every rank tells rank 0 the input bytes and
rows it has converted, about once a ``interval``; rank 0 prints the job's rows/s, bytes
done and ETA. Small JSON messages on a communicator of their own (``mpips.wire``)."""
from __future__ import annotations

import sys
import time
from typing import Optional

from mpi4py import MPI

from .waiting import idle_wait, wait_all
from .wire import poll_json, send_json

TAG = 71


def progress_line(rows: int, done: int, total: int, seconds: float) -> str:
    """``rows``, ``done`` of ``total`` input bytes after ``seconds``: rate, share, ETA."""
    rate = rows / max(seconds, 1e-9)
    eta = (total - done) * seconds / done if done else float("inf")
    return (f"[mpips] prep: {rows:,} rows, {done / 2**30:.2f} of {total / 2**30:.2f} GiB "
            f"({100 * done / max(total, 1):.0f} %), {rate:,.0f} rows/s, ETA "
            f"{_duration(eta)}")


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class PrepProgress:
    """Collective to make and to ``finish``; ``advance`` as work is done, on any rank."""

    def __init__(self, comm: MPI.Intracomm, total_bytes: int, interval: float = 10.0,
                 verbose: bool = True) -> None:
        self.comm = comm.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.total, self.interval, self.verbose = total_bytes, interval, verbose
        self.t0 = self._last = time.perf_counter()
        self.bytes = self.rows = 0
        self._ranks = {r: (0, 0, False) for r in range(1, self.size)}   # rank 0's view

    def advance(self, nbytes: int, rows: int) -> None:
        """This rank converted ``nbytes`` more input bytes into ``rows`` more rows."""
        self.bytes, self.rows = self.bytes + nbytes, self.rows + rows
        if self.rank:
            if time.perf_counter() - self._last >= self.interval:
                self._last = time.perf_counter()
                send_json(self.comm, [self.bytes, self.rows, False], 0, TAG)
        else:
            self._watch()

    def finish(self) -> None:
        """Collective: rank 0 waits for every rank's last report, then all go on."""
        if self.rank:
            send_json(self.comm, [self.bytes, self.rows, True], 0, TAG)
        else:
            idle_wait(lambda: self._watch() and all(d for *_, d in self._ranks.values()))
        wait_all([self.comm.Ibarrier()])
        self.comm.Free()

    def _watch(self) -> bool:
        """Rank 0: take every report that has arrived; print when it is time."""
        got: Optional[tuple[int, list]] = poll_json(self.comm, TAG)
        while got is not None:
            source, (nbytes, rows, done) = got
            self._ranks[source] = (nbytes, rows, done)
            got = poll_json(self.comm, TAG)
        if self.verbose and time.perf_counter() - self._last >= self.interval:
            self._last = time.perf_counter()
            nbytes = self.bytes + sum(b for b, _, _ in self._ranks.values())
            rows = self.rows + sum(r for _, r, _ in self._ranks.values())
            print(progress_line(rows, nbytes, self.total, self._last - self.t0),
                  file=sys.stderr, flush=True)
        return True
