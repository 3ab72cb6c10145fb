"""The ``--kill-at RANK:STEP`` test aid: world rank RANK kills itself with ``SIGKILL`` when
it reaches STEP, as a crashed node would (no exception, no MPI call, no flush of MPI
buffers), so that failure handling can be tried on purpose.

What a rank counts as its step: a worker, the steps it has completed (it dies before
starting step STEP); a server, the steps it has applied (BSP rounds, or the highest SSP/ASP
step + 1); the scheduler, the most steps any worker has reported.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Optional


class KillSwitch:
    """This rank's part of ``--kill-at``: ``step`` None when the aid names another rank."""

    def __init__(self, step: Optional[int] = None, rank: int = 0) -> None:
        self.step, self.rank = step, rank

    @classmethod
    def of(cls, kill_at: Optional[tuple[int, int]], world_rank: int) -> "KillSwitch":
        """The switch of ``world_rank`` for ``--kill-at`` as (rank, step), or None."""
        mine = kill_at is not None and kill_at[0] == world_rank
        return cls(kill_at[1] if mine else None, world_rank)

    def reached(self, step: int) -> None:
        """This rank is at ``step``: die there if the aid says so (never returns then)."""
        if self.step is not None and step >= self.step:
            print(f"mpips: --kill-at: rank {self.rank} kills itself at step {step}",
                  file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
