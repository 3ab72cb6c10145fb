"""Taking a failed job down: every rank ends, none waits forever on a dead peer."""
from __future__ import annotations

import os
import socket
import sys
import traceback
from typing import Callable, NoReturn, Optional

from mpi4py import MPI

from .errors import MpipsError
from .faults import JobLost
from .wire import allgather_json


def agree_on_setup(check: Callable[[], object], comm: MPI.Comm = MPI.COMM_WORLD
                   ) -> Optional[int]:
    """Run ``check`` on every rank before any other communication; if it failed anywhere
    (a file only some nodes lack, say), rank 0 prints the first error and every rank gets
    exit status 2. Returns None when every rank passed."""
    try:
        check()
        mine = None
    except MpipsError as exc:
        mine = str(exc)
    errors = allgather_json(comm, mine)
    failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
    if not failed:
        return None
    if comm.Get_rank() == 0:
        rank, text = failed[0]
        where = "" if len(failed) == comm.Get_size() else f" (rank {rank})"
        print(f"mpips: error{where}: {text}", file=sys.stderr, flush=True)
    return 2


LOST = 3            # the exit status of survivors when ranks died (ULFM)


def leave(status: int) -> NoReturn:
    """Exit at once with ``status``, without ``MPI_Finalize``: after a rank died (ULFM)
    it may hang for good, with every survivor in it (seen both when the job ends and when
    it went on and finished)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def abort_on_error(main: Callable[[], int], comm: MPI.Comm = MPI.COMM_WORLD) -> int:
    """Run ``main``; an error on any rank takes the whole job down instead of hanging it.

    An ``MpipsError`` prints one line naming the rank; anything else prints the rank's
    header and traceback. Both then call ``MPI_Abort``, so no rank waits forever on a peer.
    Under ULFM, when ranks died (``JobLost``), the survivors have agreed to end: one of
    them prints why, and each exits at once with ``LOST``, neither aborting nor calling
    ``MPI_Finalize`` (Open MPI 5's hung now and then in these tests, with every survivor
    in it).
    """
    try:
        return main()
    except BaseException as exc:  # noqa: BLE001 - any failure must end the job
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        if isinstance(exc, JobLost):     # ranks died: the survivors end together
            if exc.report:
                print(f"mpips: error: {exc}", file=sys.stderr, flush=True)
            leave(LOST)
        header = f"mpips: rank {comm.Get_rank()} of {comm.Get_size()} on {socket.gethostname()}"
        if isinstance(exc, KeyboardInterrupt):
            print(f"{header}: interrupted", file=sys.stderr, flush=True)
        elif isinstance(exc, MpipsError):
            print(f"{header}: error: {exc}", file=sys.stderr, flush=True)
        else:
            print(f"{header}: unhandled {type(exc).__name__}, aborting the job", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
        comm.Abort(1)
        os._exit(1)      # MPI_Abort may return before the launcher kills this process
