"""Ranks killed mid-run under ULFM (Open MPI, ``mpiexec --with-ft ulfm``; ``make
test-ulfm``): a dead worker or server costs no restart: the survivors go on from the last
checkpoint, the job exits 0 with every planned sample trained and says what it survived;
under BSP a server's death changes no parameter against the run that lost nobody. The
scheduler's death ends the job cleanly (exit 3, one line, no traceback, no
``MPI_Abort``), and ``--resume`` finishes it.

They skip unless ``$MPIPS_MPIEXEC`` launches with ``--with-ft ulfm``; with
``MPIPS_ULFM_REQUIRED=1`` (the Makefile target) they fail instead.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from former import FLAGS  # noqa: E402
from launch import launch, mpiexec  # noqa: E402
from saved import final_tables  # noqa: E402

import numpy as np  # noqa: E402

if "--with-ft" not in os.environ.get("MPIPS_MPIEXEC", ""):
    if os.environ.get("MPIPS_ULFM_REQUIRED") == "1":
        raise RuntimeError("MPIPS_ULFM_REQUIRED=1 but $MPIPS_MPIEXEC has no --with-ft ulfm")
    pytest.skip("needs $MPIPS_MPIEXEC with Open MPI's --with-ft ulfm (make test-ulfm)",
                allow_module_level=True)

N = 5
LOST = 3                        # failures.LOST: the survivors' exit status
ARGS = ["train", "--synthetic-rows", "20000", "--batch-size", "256", "--servers", "2",
        "--checkpoint-every", "5", "--progress-seconds", "0.2", *FLAGS]
PLANNED = 2 * 16_000            # two epochs of the training rows


def world_pid(token: str, rank: int) -> int:
    """The process id of world rank ``rank`` of the job launched with ``MPIPS_TEST_JOB``
    set to ``token`` (Open MPI gives each rank ``OMPI_COMM_WORLD_RANK``)."""
    want = {b"MPIPS_TEST_JOB=" + token.encode(), b"OMPI_COMM_WORLD_RANK=%d" % rank}
    for p in Path("/proc").iterdir():
        try:
            if want <= set((p / "environ").read_bytes().split(b"\0")):
                return int(p.name)
        except OSError:
            continue
    raise AssertionError(f"no process of world rank {rank}")


def killed_run(*args: str, then: int | None = None) -> tuple[subprocess.CompletedProcess,
                                                             float]:
    """Launch a job with ``--kill-at``; returns its result and the seconds from the
    killed rank's last line to the end of the job. ``then``: also SIGKILL that world
    rank as soon as the first one says it dies (while the survivors recover)."""
    cmd = [*mpiexec(), "-n", str(N), sys.executable, "-m", "mpips", *ARGS, *args]
    token = f"{os.getpid()}-{time.monotonic()}"
    env = dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               MPIPS_TEST_JOB=token)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    killed: list[float] = []
    err: list[str] = []

    def read_stderr() -> None:
        for line in proc.stderr:
            if "--kill-at:" in line and not killed:
                killed.append(time.monotonic())
                if then is not None:
                    os.kill(world_pid(token, then), signal.SIGKILL)
            err.append(line)

    reader = threading.Thread(target=read_stderr)
    reader.start()
    hang = threading.Timer(150, proc.kill)      # a hung job fails the test, not the suite
    hang.start()
    try:
        out = proc.stdout.read()
        proc.wait(timeout=120)
    finally:
        hang.cancel()
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
    ended = time.monotonic()
    assert killed, "the rank named by --kill-at never reached its step:\n" + "".join(err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "".join(err)), \
        ended - killed[0]


def assert_clean_end(res: subprocess.CompletedProcess, seconds: float, line: str) -> None:
    """Exit 3 within 30 s, the one error line starting with ``line``, no traceback."""
    errors = [x.strip("\x00 ") for x in res.stderr.splitlines() if "mpips: error:" in x]
    assert res.returncode == LOST, res.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("mpips: error: " + line), errors
    assert "Traceback" not in res.stderr and "MPI_ABORT" not in res.stderr, res.stderr
    assert seconds < 30


def survived(res: subprocess.CompletedProcess, metrics, who: str,
             kept: bool | None = False) -> dict:
    """The job went on after ``who`` died and finished: exit 0, no traceback, the line
    that says so, every planned sample; returns its final record. ``kept``: it went on
    from where it stood (nothing reloaded, no step back), False: from a checkpoint,
    None: either, as its line says (it depends on which pushes were out)."""
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "MPI_ABORT" not in res.stderr, res.stderr
    if kept is None:
        kept = "the servers' rows as they stood" in res.stdout
    where = "step {}, the servers' rows as they stood" if kept else "the checkpoint of step {}"
    final = json.loads(metrics.read_text().splitlines()[-1])
    assert final["event"] == "final" and final["samples"] == PLANNED
    assert f"{who} died; the job goes on from " + where.format(final["resumed_from_step"]) \
        in res.stdout, res.stdout
    assert final["failures_survived"] == 1 and len(final["recovery_seconds"]) == 1
    assert 0 < final["recovery_seconds"][0] < 30
    if kept and "server" in who:        # the survivors' rows kept, the dead one's reloaded
        assert final["rows_reloaded"] > 0 and final["recovery_steps_back"][0] > 0
        assert f"rows of the dead from the checkpoint {final['recovery_steps_back'][0]} " \
            f"steps back" in res.stdout
    elif kept:
        assert final["rows_reloaded"] == 0 and final["recovery_steps_back"] == [0]
    else:
        assert final["rows_reloaded"] > 0
    return final


def resumed(ck, run: str, *args: str) -> dict:
    """``--resume`` the run; returns its final record."""
    metrics = ck / f"{run}.jsonl"
    res = launch(N, *ARGS, *args, "--checkpoint-dir", str(ck), "--run-name", run, "--resume",
                 "--metrics-out", str(metrics), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(metrics.read_text().splitlines()[-1])


def test_bsp_server_killed_goes_on_bit_identical(tmp_path):
    """Server 1 (world rank 2) dies at step 12 under BSP: the survivors go back to the
    checkpoint of step 10 on one server and end with exactly the parameters of the run
    that lost nobody."""
    ck = tmp_path / "ck"
    ref = launch(N, *ARGS, "--checkpoint-dir", str(ck), "--run-name", "ref", timeout=120)
    assert ref.returncode == 0, ref.stderr[-3000:]
    res, _ = killed_run("--kill-at", "2:12", "--checkpoint-dir", str(ck), "--run-name", "cut",
                        "--metrics-out", str(tmp_path / "m.jsonl"))
    final = survived(res, tmp_path / "m.jsonl", "server 1 (rank 2)")
    assert final["servers"] == 1 and final["resumed_from_step"] == 10
    want, got = final_tables(ck / "ref"), final_tables(ck / "cut")
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("sync,victim,who", [
    ("bsp", "4:8", "worker 1 (rank 4)"),
    ("ssp --balance off", "4:8", "worker 1 (rank 4)"), ("ssp", "1:12", "server 0 (rank 1)"),
    ("async", "3:8", "worker 0 (rank 3)"), ("async", "2:12", "server 1 (rank 2)"),
    ("async --balance off", "2:12", "server 1 (rank 2)")])
def test_killed_worker_or_server_costs_no_restart(tmp_path, sync, victim, who):
    """A worker or a server dies mid-run under BSP, SSP or ASP: the job goes on without
    it and trains exactly the planned samples. A worker killed before its step 8 under
    BSP costs no step back: the servers keep their rows, and the job goes on from round
    8, not from the checkpoint of step 5; under SSP with ``--balance off`` too, unless a
    survivor's push was out on some servers only. A server killed under SSP or ASP,
    balanced or not: only its rows come back from the checkpoint (with one surviving
    server no push can be torn), and the workers' batches taken from the pool but not
    applied are trained after (every planned sample). A balanced worker's death sends
    every rank back (the batches it took are counted nowhere)."""
    kept = {"bsp": True, "ssp --balance off": None}.get(sync, False) \
        if "worker" in who else sync != "bsp"
    res, _ = killed_run("--sync", *sync.split(), "--kill-at", victim, "--checkpoint-dir",
                        str(tmp_path), "--metrics-out", str(tmp_path / "m.jsonl"))
    final = survived(res, tmp_path / "m.jsonl", who, kept)
    assert (final["servers"], final["workers"]) == ((1, 2) if "server" in who else (2, 1))
    if kept is True and "worker" in who:
        assert final["resumed_from_step"] == 8
    elif kept:      # the dead server's rows went back to a checkpoint before its step 12
        assert 0 < final["resumed_from_step"] - final["recovery_steps_back"][0] < 12


def test_kept_rows_land_where_the_moves_put_them(tmp_path):
    """Under BSP a worker's death keeps the servers' rows; with partitions moved every 3
    steps before it (and after), each server's rows sit where the moves put them, not
    where a fresh layout would, and must be copied so: the job ends with exactly the
    parameters of the same death without moves (BSP does not depend on placement)."""
    ck = tmp_path / "ck"
    for run, extra in (("still", []), ("moving", ["--move-every", "3"])):
        res, _ = killed_run("--kill-at", "4:8", "--checkpoint-dir", str(ck), "--run-name",
                            run, "--metrics-out", str(tmp_path / f"{run}.jsonl"), *extra)
        survived(res, tmp_path / f"{run}.jsonl", "worker 1 (rank 4)", kept=True)
    want, got = final_tables(ck / "still"), final_tables(ck / "moving")
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_a_second_death_while_recovering_is_recovered_too(tmp_path):
    """Worker 1 (world rank 4) dies at step 8 and server 1 (rank 2) as soon as it does,
    while the survivors recover (or just after): the job goes on without both and
    trains exactly the planned samples."""
    res, _ = killed_run("--kill-at", "4:8", "--checkpoint-dir", str(tmp_path),
                        "--metrics-out", str(tmp_path / "m.jsonl"), then=2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "MPI_ABORT" not in res.stderr, res.stderr
    final = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])
    assert final["samples"] == PLANNED and (final["servers"], final["workers"]) == (1, 1)
    assert final["failures_survived"] in (1, 2)        # one series, or one after the other


def test_scheduler_killed_ends_the_job_with_a_resume_hint(tmp_path):
    """The scheduler holds the board: its death ends the job, and the line says so."""
    res, seconds = killed_run("--kill-at", "0:6", "--checkpoint-dir", str(tmp_path))
    assert_clean_end(res, seconds, "the scheduler (rank 0) died")
    assert "--resume" in res.stderr
    assert resumed(tmp_path, "run")["samples"] == PLANNED
