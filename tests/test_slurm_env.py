"""The Slurm environment and its effect on the settings, without a Slurm."""
import os
import signal

from mpips import slurm
from mpips.config import TrainConfig
from mpips.slurm import SlurmJob, catch_stop_signal, slurm_settings, stop_requested


def test_the_job_is_read_from_the_environment():
    assert SlurmJob.from_environ({}) is None
    job = SlurmJob.from_environ({"SLURM_JOB_ID": "42", "SLURM_NTASKS": "6",
                                 "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_RESTART_COUNT": "1"})
    assert job == SlurmJob("42", 6, "n[1-2]", 1) and job.run_name == "slurm-42"
    assert job.describe(6) == "[mpips] Slurm job 42 (restart 1) on n[1-2]: 6 MPI ranks"
    assert "the job has 6 Slurm tasks" in job.describe(4)
    array = SlurmJob.from_environ({"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "40",
                                   "SLURM_ARRAY_TASK_ID": "3"})
    assert array.run_name == "slurm-40_3" and array.restarts == 0


def test_a_slurm_run_is_named_by_its_job_and_resumes_by_itself(tmp_path):
    cfg = TrainConfig(checkpoint_dir=str(tmp_path))
    job = SlurmJob("7", 4, "n1", 0)
    assert slurm_settings(cfg, None, False) == cfg
    fresh = slurm_settings(cfg, job, False)
    assert fresh.run_name == "slurm-7" and fresh.resume is None
    assert slurm_settings(cfg.replace(run_name="mine"), job, True).run_name == "mine"
    (tmp_path / "slurm-7" / "step-00000010").mkdir(parents=True)
    (tmp_path / "slurm-7" / "step-00000010" / "manifest.json").write_text("{}")
    assert slurm_settings(cfg, job, False).resume == "latest"     # requeued: resume


def test_the_stop_signal_is_caught_not_fatal(monkeypatch):
    monkeypatch.setitem(slurm._stop, "requested", False)   # restored afterwards
    before = signal.getsignal(signal.SIGUSR1)
    try:
        catch_stop_signal()
        assert not stop_requested()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop_requested()
    finally:
        signal.signal(signal.SIGUSR1, before)
