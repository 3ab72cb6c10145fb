"""Checkpoints end to end: a rank killed mid-run, damaged checkpoints, ``mpips inspect``."""
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

from former import FLAGS
from launch import launch, mpiexec
from saved import final_state
from mpips.checkpoint import manifest
from mpips.checkpoint.layout import LATEST, complete_steps, server_file

ARGS = ["train", "--synthetic-rows", "30000", "--batch-size", "256", "--model", "fm",
        "--checkpoint-every", "5", "--checkpoint-keep", "100", "--delay-jitter", "0.02",
        *FLAGS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with a checkpoint every 5 steps (and a final one)."""
    root = tmp_path_factory.mktemp("ck")
    res = launch(4, *ARGS, "--checkpoint-dir", str(root), "--run-name", "ref", timeout=180)
    assert res.returncode == 0, res.stderr
    return root


def ranks_of(pid: int) -> list[int]:
    """Processes below ``pid`` that run mpips (the MPI ranks)."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(p.name))
        except (ValueError, OSError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            todo.append(c)
            try:
                if b"mpips" in Path(f"/proc/{c}/cmdline").read_bytes():
                    out.append(c)
            except OSError:
                pass
    return out


def test_sigkill_mid_run_then_resume_is_bit_identical(reference, tmp_path):
    """Kill a rank after the first checkpoints: the job ends; --resume finishes it with the
    parameters and optimiser state of the run that was never interrupted, and trains on
    exactly the rows that were left (no row twice, none skipped)."""
    ck = tmp_path / "ck"
    cmd = [*mpiexec(), "-n", "4", sys.executable, "-m", "mpips", *ARGS, "--checkpoint-dir",
           str(ck), "--run-name", "cut"]
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while not (ck / "cut" / LATEST).exists() and proc.poll() is None:
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        victims = ranks_of(proc.pid)
        assert victims and proc.poll() is None, "the job ended before it could be killed"
        os.kill(max(victims), signal.SIGKILL)
        started = time.time()
        proc.wait(timeout=60)
        assert proc.returncode != 0 and time.time() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = manifest.load(complete_steps(ck / "cut")[0])
    assert not saved["final"]
    metrics = tmp_path / "m.jsonl"
    res = launch(4, *ARGS, "--checkpoint-dir", str(ck), "--run-name", "cut", "--resume",
                 "--metrics-out", str(metrics), timeout=180)
    assert res.returncode == 0, res.stderr
    assert "resuming from" in res.stdout
    final = json.loads(metrics.read_text().splitlines()[-1])
    assert final["resumed_from_step"] == saved["step"] >= 5
    assert final["samples"] == 2 * 24_000          # two epochs of the training rows
    want, got = final_state(reference / "ref"), final_state(ck / "cut")
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("damage", ["flip", "truncate", "half-written"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, damage):
    """The newest checkpoint is damaged (or a newer one half-written): resume warns, names
    the file, uses the one before, and still ends where the uninterrupted run ended."""
    run = tmp_path / "ck" / "ref"
    shutil.copytree(reference / "ref", run)
    steps = complete_steps(run)
    for later in steps[:-3]:                         # keep steps 5, 10 and 15
        shutil.rmtree(later)
    newest = complete_steps(run)[0]
    (run / LATEST).write_text(newest.name + "\n")
    victim = newest / server_file(0)
    if damage == "flip":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:4096])
    else:
        partial = run / "step-00000020.partial"
        partial.mkdir()
        shutil.copy(victim, partial / server_file(0))
    res = launch(4, *ARGS, "--checkpoint-dir", str(tmp_path / "ck"), "--run-name", "ref",
                 "--resume", timeout=180)
    assert res.returncode == 0, res.stderr
    if damage == "half-written":
        assert f"resuming from {newest}" in res.stdout
    else:
        assert str(victim) in res.stderr and "unusable" in res.stderr
        assert "step 10" in res.stdout.split("resuming from", 1)[1].splitlines()[0]
    want, got = final_state(reference / "ref"), final_state(run)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_inspect_prints_and_verifies(reference, tmp_path):
    step = complete_steps(reference / "ref")[0]
    ok = subprocess.run([sys.executable, "-m", "mpips", "inspect", str(step)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "table features" in ok.stdout and "checksums verified" in ok.stdout
    bad = tmp_path / step.name
    shutil.copytree(step, bad)
    data = bytearray((bad / server_file(0)).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / server_file(0)).write_bytes(bytes(data))
    res = subprocess.run([sys.executable, "-m", "mpips", "inspect", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "checksum" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr
