"""Running under Slurm: the job's environment (read once), the stop signal, requeueing.

Slurm warns a job before its time limit or a preemption with a signal (``#SBATCH
--signal=USR1@120``, sent to every rank). Every rank catches ``SIGUSR1``, so none dies of
it; the scheduler (rank 0, which also heeds ``kill -USR1`` by hand) then asks for a
checkpoint at the next step boundary and stops the job there. Under Slurm rank 0 then
requeues the job, and the requeued job, whose run is named by the job id, finds its
checkpoints and resumes without any change to the command.
"""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from typing import Mapping, Optional

from .checkpoint.layout import complete_steps
from .config import TrainConfig

STOP_SIGNAL = signal.SIGUSR1
_stop = {"requested": False}


@dataclass(frozen=True)
class SlurmJob:
    """What mpips uses of a Slurm job's environment."""

    job_id: str
    ntasks: Optional[int]
    nodelist: str
    restarts: int

    @classmethod
    def from_environ(cls, env: Mapping[str, str] = os.environ) -> Optional["SlurmJob"]:
        """The job this process runs in, or None outside Slurm (array tasks count as
        jobs of their own)."""
        job = env.get("SLURM_JOB_ID")
        if not job:
            return None
        if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
            job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
        ntasks = env.get("SLURM_NTASKS")
        return cls(job, int(ntasks) if ntasks and ntasks.isdigit() else None,
                   env.get("SLURM_JOB_NODELIST", ""), int(env.get("SLURM_RESTART_COUNT", "0")
                                                          or 0))

    @property
    def run_name(self) -> str:
        return f"slurm-{self.job_id}"

    def describe(self, ranks: int) -> str:
        """The line rank 0 prints: the job, its restarts and nodes, and a warning when
        the MPI job does not fill the Slurm tasks."""
        line = (f"[mpips] Slurm job {self.job_id} (restart {self.restarts}) on "
                f"{self.nodelist or '?'}: {ranks} MPI ranks")
        if self.ntasks is not None and self.ntasks != ranks:
            line += f"; warning: the job has {self.ntasks} Slurm tasks"
        return line


def slurm_settings(cfg: TrainConfig, job: Optional[SlurmJob], named: bool) -> TrainConfig:
    """Under Slurm the run is named by the job (unless ``named`` by the user), and a job
    that finds checkpoints of its run -- it was requeued -- resumes from the latest."""
    if job is None:
        return cfg
    if not named:
        cfg = cfg.replace(run_name=job.run_name)
    if cfg.resume is None and complete_steps(cfg.run_dir):
        cfg = cfg.replace(resume="latest")
    return cfg


def catch_stop_signal() -> None:
    """Every rank: ``SIGUSR1`` no longer ends the process (its default) but is recorded;
    the scheduler (rank 0) acts on it with a checkpoint and a stop, the other ranks leave
    it to the scheduler (Slurm signals every rank)."""
    signal.signal(STOP_SIGNAL, lambda *_: _stop.update(requested=True))


def stop_requested() -> bool:
    """Has this process received the stop signal?"""
    return _stop["requested"]


def requeue(job: SlurmJob) -> str:
    """Put the job back in the queue (rank 0, after it stopped at a checkpoint); Slurm
    then ends this run. Returns what to print if that failed."""
    try:
        done = subprocess.run(["scontrol", "requeue", job.job_id], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"mpips: warning: could not requeue Slurm job {job.job_id}: {exc}"
    if done.returncode != 0:
        return (f"mpips: warning: 'scontrol requeue {job.job_id}' failed: "
                f"{done.stderr.strip()}")
    return f"[mpips] requeued Slurm job {job.job_id}"
