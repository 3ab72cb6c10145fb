"""Start ``mpiexec`` jobs from tests, always under a hard time limit."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path


def mpiexec() -> list[str]:
    """The launcher: ``$MPIPS_MPIEXEC`` (e.g. with --oversubscribe), else the venv's."""
    if "MPIPS_MPIEXEC" in os.environ:
        return shlex.split(os.environ["MPIPS_MPIEXEC"])
    return [str(Path(sys.executable).parent / "mpiexec")]


def launch(n: int, *args: str, timeout: float = 120, cwd: str | None = None
           ) -> subprocess.CompletedProcess:
    """``mpiexec -n N python -m mpips ARGS``; a hang raises ``TimeoutExpired``."""
    cmd = [*mpiexec(), "-n", str(n), sys.executable, "-m", "mpips", *args]
    env = dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env)
