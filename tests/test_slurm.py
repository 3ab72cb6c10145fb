"""Slurm end to end on a real single-node Slurm (CI starts one with
``jobs/slurm/local-slurm.sh``): the batch script trains, checkpoints and requeues itself on
SIGUSR1 and resumes to the same result, and a killed rank ends the job quickly.

Skipped where no Slurm answers, unless ``MPIPS_REQUIRE_SLURM=1`` (as in CI) makes that a
failure."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mpips.checkpoint.layout import complete_steps
from saved import final_state

SCRIPT = Path(__file__).resolve().parents[1] / "jobs" / "slurm" / "train.sbatch"
VENV = str(Path(sys.executable).parent.parent)
# About 15 s of training: long enough to signal or kill it while it runs.
ARGS = ["--synthetic-rows", "100000", "--delay-jitter", "0.05"]


def slurm_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


if not slurm_up():
    if os.environ.get("MPIPS_REQUIRE_SLURM") == "1":
        raise RuntimeError("MPIPS_REQUIRE_SLURM=1 but no Slurm answers (sinfo failed)")
    pytest.skip("no Slurm here (CI starts one: jobs/slurm/local-slurm.sh)",
                allow_module_level=True)


def sbatch(folder: Path, *args: str, wait: bool = False) -> tuple[str, int]:
    """Submit the batch script with 4 tasks from ``folder``: (job id, sbatch status)."""
    cmd = ["sbatch", "--parsable", "--ntasks", "4", "--chdir", str(folder),
           *(["--wait"] if wait else []), str(SCRIPT), *args]
    env = dict(os.environ, MPIPS_VENV=VENV)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.stdout.strip(), res.stderr
    return res.stdout.strip().split(";")[0], res.returncode


def states(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                          text=True, timeout=30).stdout.strip()


def wait_for(done, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not done():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def log(folder: Path, job: str) -> str:
    path = folder / f"slurm-mpips-{job}.out"
    return path.read_text() if path.exists() else ""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted batch job: its log and final checkpoint."""
    folder = tmp_path_factory.mktemp("ref")
    job, status = sbatch(folder, *ARGS, "--metrics-out", "m.jsonl", wait=True)
    assert status == 0, log(folder, job)
    return folder, job


def test_sbatch_trains_on_the_built_in_data(reference):
    folder, job = reference
    text = log(folder, job)
    assert "done: AUC" in text and f"job {job} (restart 0)" in text
    final = json.loads((folder / "m.jsonl").read_text().splitlines()[-1])
    assert final["event"] == "final" and final["auc"] > 0.65
    assert complete_steps(folder / "checkpoints" / f"slurm-{job}")    # the final checkpoint


@pytest.mark.timeout(600)
def test_usr1_checkpoints_requeues_and_resumes_to_the_same_result(reference, tmp_path):
    """SIGUSR1 to the batch shell: the job checkpoints at the next step, requeues itself,
    and the requeued run resumes by itself and ends with the uninterrupted parameters."""
    job, _ = sbatch(tmp_path, *ARGS)
    wait_for(lambda: "samples/s" in log(tmp_path, job), 120, "training to start")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=30)
    wait_for(lambda: "requeue" in log(tmp_path, job), 60, "the checkpoint and requeue")
    # Slurm holds a requeued job for about two minutes before it may start again.
    wait_for(lambda: "done: AUC" in log(tmp_path, job) or "mpips: error" in
             log(tmp_path, job), 400, "the requeued job to finish")
    text = log(tmp_path, job)
    assert "stopping" in text and f"job {job} (restart 1)" in text
    assert "resuming from" in text.split("(restart 1)", 1)[1]
    want = final_state(reference[0] / "checkpoints" / f"slurm-{reference[1]}")
    got = final_state(tmp_path / "checkpoints" / f"slurm-{job}")
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def ranks_of(job: str) -> list[int]:
    """Pids of this job's mpips ranks (Python processes; not the sruns that start them)."""
    out = []
    for p in Path("/proc").iterdir():
        try:
            env = (p / "environ").read_bytes().split(b"\0")
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            if f"SLURM_JOB_ID={job}".encode() in env and b"python" in cmd[0] \
                    and any(b"mpips" in c for c in cmd):
                out.append(int(p.name))
        except (OSError, ValueError):
            continue
    return out


@pytest.mark.timeout(300)
def test_a_rank_killed_under_srun_ends_the_job_within_30s(tmp_path):
    job, _ = sbatch(tmp_path, *ARGS)
    wait_for(lambda: "samples/s" in log(tmp_path, job), 120, "training to start")
    victims = ranks_of(job)
    assert len(victims) == 4, victims
    os.kill(max(victims), signal.SIGKILL)
    killed = time.time()
    wait_for(lambda: states(job) not in ("RUNNING", "COMPLETING"), 60, "the job to end")
    assert time.time() - killed < 30
    assert "done: AUC" not in log(tmp_path, job)
