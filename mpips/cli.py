"""``mpips``: the command line. Run it under ``mpiexec``; every rank runs the same command."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

# Ranks usually outnumber cores: one numba and one BLAS thread per rank unless the user
# chose otherwise (set before numba and NumPy load).
for _var in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from . import __version__  # noqa: E402
from .clocks import SYNC_MODES  # noqa: E402
from .cli_tools import TOOLS, add_parsers, run_tool  # noqa: E402
from .codecs import CHOICES as CODEC_CHOICES, PULL_CHOICES  # noqa: E402
from .config import BALANCE_MODES, FORMATS, MODELS, PULL_MODES, REBALANCE_MODES, \
    TrainConfig, from_mapping, load_toml  # noqa: E402
from .data.parse import BAD_LINE_MODES  # noqa: E402
from .optim import OPTIMIZERS  # noqa: E402

D = TrainConfig()
TRAIN_OPTIONS: list[tuple[str, dict]] = [
    ("--data", dict(metavar="PATH", help="training data: a text file in --format, or a "
                    "folder written by 'mpips prep' (default: the built-in synthetic "
                    "Criteo-shaped data)")),
    ("--test", dict(metavar="PATH", help="test data, as --data (default: hold out the last "
                    "--test-fraction of the training rows)")),
    ("--format", dict(choices=FORMATS, help=f"format of text --data/--test (default "
                      f"{D.format}); libfm is libsvm; csv needs [csv] in --config")),
    ("--on-bad-line", dict(choices=BAD_LINE_MODES, help="a malformed line stops the job "
                           "naming file and line (error, the default), or is left out and "
                           "counted (skip)")),
    ("--model", dict(choices=MODELS, help=f"model to train (default {D.model})")),
    ("--servers", dict(type=int, metavar="S", help=f"parameter servers (default {D.servers}); "
                       "rank 0 schedules, ranks 1..S serve, the rest are workers")),
    ("--epochs", dict(type=int, help=f"passes over the training rows (default {D.epochs})")),
    ("--batch-size", dict(type=int, metavar="N", help=f"rows per worker per step (default "
                          f"{D.batch_size}); a step's gradient is the mean over all workers")),
    ("--lr", dict(type=float, help=f"learning rate (default: per model and optimizer, "
                  f"{D.lr} for lr + {D.optimizer}; README 'Defaults')")),
    ("--linear-lr", dict(type=float, metavar="LR", help="learning rate of FM's and "
                         "DeepFM's first-order weights (default: lr's default rate for "
                         "the optimizer when --lr is not given, else --lr)")),
    ("--optimizer", dict(choices=OPTIMIZERS, help=f"server-side optimizer (default "
                         f"{D.optimizer})")),
    ("--l2", dict(type=float, help=f"L2 penalty on touched rows; FTRL's lambda2 (default: "
                  f"per model, {D.l2} for lr)")),
    ("--l1", dict(type=float, help=f"FTRL's L1 penalty lambda1 (default {D.l1})")),
    ("--seed", dict(type=int, help=f"seed for initial values, the built-in data and the "
                    f"hashing of text data; prepared data keep the hashing seed of 'mpips "
                    f"prep' (default {D.seed})")),
    ("--metrics-out", dict(metavar="FILE", help="write JSON lines: progress records and a "
                           "final record (auc, logloss, samples, seconds, samples_per_s)")),
    ("--table-rows", dict(type=int, metavar="N", help=f"hash buckets of the sparse table "
                          f"(default {D.table_rows})")),
    ("--embedding-dim", dict(type=int, metavar="K", help=f"FM embedding size (default "
                             f"{D.embedding_dim})")),
    ("--hidden", dict(metavar="H1,H2", help="DeepFM's hidden layer sizes (default "
                      f"{','.join(map(str, D.hidden))})")),
    ("--init-std", dict(type=float, metavar="S", help=f"std of the seeded normal initial "
                        f"embeddings (default {D.init_std})")),
    ("--test-fraction", dict(type=float, metavar="F", help=f"share of rows held out when "
                             f"there is no --test (default {D.test_fraction})")),
    ("--synthetic-rows", dict(type=int, metavar="N", help=f"rows of built-in data, train + "
                              f"test (default {D.synthetic_rows})")),
    ("--progress-seconds", dict(type=float, metavar="T", help=f"seconds between progress "
                                f"lines (default {D.progress_seconds})")),
    ("--sync", dict(choices=SYNC_MODES, help="consistency: bsp (deterministic rounds), ssp "
                    "(a worker runs at most --staleness steps ahead of the slowest) or async "
                    "(no waiting); per table with [tables.NAME] sync = ... in --config "
                    f"(default {D.sync})")),
    ("--staleness", dict(type=int, metavar="S", help=f"SSP bound in steps (default "
                         f"{D.staleness})")),
    ("--balance", dict(choices=BALANCE_MODES, help="SSP and ASP workers share out work: "
                       "one that runs out of batches takes another's, and one that is m "
                       "times as fast as the slowest takes m batches a step; auto: on "
                       f"unless the job runs in BSP rounds (default {D.balance})")),
    ("--slow-worker", dict(metavar="I:FACTOR", help="test aid: make worker I (0-based) "
                           "FACTOR times slower by sleeping, to study stragglers")),
    ("--standby", dict(type=int, metavar="N", help="extra server ranks that start without "
                       "partitions; the balancer brings one in when the servers are the "
                       "bottleneck (default 0)")),
    ("--rebalance", dict(choices=REBALANCE_MODES, help="move partitions from busy to idle "
                         "servers while the job runs (auto, the default, with 2 or more "
                         "server ranks), or keep the placement fixed (off); tune with "
                         "rebalance-margin, rebalance-window and rebalance-mib in --config")),
    ("--window-headroom", dict(type=float, metavar="F", help="spare rows in each server's "
                               "windows, as a share of its rows, so partitions can arrive "
                               f"without new windows (default {D.window_headroom})")),
    ("--slow-server", dict(metavar="I:FACTOR", help="test aid: server I (0-based) sleeps "
                           "FACTOR - 1 times its own busy time, to study slow servers")),
    ("--move-every", dict(type=int, metavar="N", help="test aid: move a seeded choice of "
                          "partitions between the servers every N steps")),
    ("--join-at", dict(metavar="STEP,...", help="bring the next standby server in before "
                       "each of these steps (scheduled; the balancer may also)")),
    ("--drain-at", dict(metavar="I:STEP,...", help="move all partitions of server I to the "
                        "others before STEP; it then idles")),
    ("--kill-at", dict(metavar="RANK:STEP", help="test aid: world rank RANK kills itself "
                       "with SIGKILL when it reaches STEP (a worker's completed steps, a "
                       "server's applied steps), to try failure handling")),
    ("--delay-jitter", dict(type=float, metavar="T", help="test aid: every worker sleeps a "
                            "random 0..T seconds each step (seeded)")),
    ("--shuffle", dict(action=argparse.BooleanOptionalAction, help="visit each worker's "
                       "batches in a new seeded order every epoch (default: on)")),
    ("--checkpoint-dir", dict(metavar="DIR", help=f"where checkpoints go, one folder per run "
                              f"(default {D.checkpoint_dir}/)")),
    ("--run-name", dict(metavar="NAME", help=f"this run's folder under --checkpoint-dir "
                        f"(default {D.run_name})")),
    ("--checkpoint-every", dict(type=int, metavar="N", help="write a checkpoint every N "
                                "steps, and one when training ends")),
    ("--checkpoint-seconds", dict(type=float, metavar="T", help="write a checkpoint every T "
                                  "seconds, and one when training ends")),
    ("--checkpoint-keep", dict(type=int, metavar="K", help=f"checkpoints kept per run "
                               f"(default {D.checkpoint_keep})")),
    ("--resume", dict(nargs="?", const="latest", metavar="PATH", help="continue from the "
                      "latest valid checkpoint of this run, or from PATH (a run or "
                      "checkpoint folder); a damaged one is skipped for an older one")),
    ("--val", dict(metavar="PATH", help="validation data, as --data (default: the last "
                   "--val-fraction of the training rows)")),
    ("--val-fraction", dict(type=float, metavar="F", help=f"share of the training rows "
                            f"(the last) kept for validation, unless --val is given "
                            f"(default {D.val_fraction}; 0: none)")),
    ("--eval-every", dict(type=int, metavar="N", help="validate every N steps as well as "
                          "every epoch (default 0: every epoch)")),
    ("--early-stop", dict(type=int, metavar="P", help="stop after P validations without a "
                          "better AUC and test the best parameters, kept as checkpoint "
                          f"'best' (default {D.early_stop}; 0: off)")),
    ("--min-count", dict(type=int, metavar="N", help="a key gets a row of its own once "
                         "training batches have held it N times; until then it reads and "
                         "trains its field's rare row (default "
                         f"{D.min_count}; 0: every key has its own)")),
    ("--admit-probability", dict(type=float, metavar="P", help="each sighting of a key "
                                 "without a row of its own admits it with probability P, "
                                 f"seeded by key and step (default {D.admit_probability})")),
    ("--evict-after", dict(type=int, metavar="STEPS", help="rows no step touched for STEPS "
                           "steps go back to their initial values and state (default 0: "
                           "never)")),
    ("--pull", dict(choices=PULL_MODES, help="how workers read server shards: direct loads "
                    "from shared memory (one node), one-sided MPI Get, or auto (default)")),
    ("--compress", dict(choices=CODEC_CHOICES, help="push codec of the embedding tables: "
                        "none, fp16, bf16, int8 (a scale and offset per row), topk (only the "
                        "--compress-keep share of rows of largest gradient norm; topk+int8 "
                        "etc. code those too); what is not sent is kept per key and sent "
                        "later (error feedback); per table with [tables.NAME] compress = ... "
                        f"(default {D.compress})")),
    ("--pull-codec", dict(choices=PULL_CHOICES, help="codec of the embedding tables' "
                          "pulls in training: none, fp16, bf16, int8; servers keep a coded "
                          "mirror of the rows that workers read and decode (for slow links "
                          "between nodes); per table with [tables.NAME] pull-codec = ... "
                          f"(default {D.pull_codec})")),
    ("--compress-keep", dict(type=float, metavar="F", help=f"topk: share of a table's rows "
                             f"sent each step (default {D.compress_keep})")),
    ("--residual-rows", dict(type=int, metavar="N", help="error feedback: keys whose residual "
                             "a worker keeps per table; past it the oldest are sent; a table "
                             "whose every row fits that memory keeps them all (default "
                             f"{D.residual_rows})")),
    ("--pull-cache", dict(type=int, metavar="ROWS", help="SSP/ASP: a worker keeps up to ROWS "
                          "pulled rows per table and serves them again while they are at most "
                          "the staleness bound old (default 0: off; never under BSP)")),
    ("--link-gbps", dict(type=float, metavar="G", help="test aid: every message of a worker "
                         "waits its bytes / G Gb/s, as on a slow link (default 0: off)")),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpips", description="Parameter-server training of sparse CTR models over MPI. "
        "Run under mpiexec, e.g. 'mpiexec -n 4 mpips train' (1 scheduler, 1 server, 2 workers).")
    parser.add_argument("--version", action="version", version=f"mpips {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tr = sub.add_parser("train", help="train a model and print AUC and log-loss",
                        description="Train a CTR model with servers holding the parameters "
                        "and workers pulling, computing and pushing (BSP).",
                        argument_default=argparse.SUPPRESS)
    tr.add_argument("--config", metavar="FILE.toml", help="settings file with the same keys "
                    "as the options (e.g. batch-size = 4096); flags override it")
    for flag, kw in TRAIN_OPTIONS:
        tr.add_argument(flag, **kw)
    add_prep_parser(sub)
    add_parsers(sub)
    ins = sub.add_parser("inspect", help="print a checkpoint's manifest and verify its "
                         "checksums (no mpiexec needed)")
    ins.add_argument("path", metavar="PATH", help="a checkpoint folder, or a run folder "
                     "(its latest checkpoint)")
    bench = sub.add_parser("bench", help="benchmarks (run under mpiexec)")
    bsub = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    pp = bsub.add_parser("pull-push", help="sparse pull and push+Adagrad rows/s against the "
                         "one-process numba gather and update")
    pp.add_argument("--servers", type=int, default=2, help="servers (default 2)")
    pp.add_argument("--batch", type=int, default=4096, help="rows per batch (default 4096)")
    pp.add_argument("--fields", type=int, default=26, help="keys per row (default 26)")
    pp.add_argument("--dim", type=int, default=16, help="row dimension (default 16)")
    pp.add_argument("--table-rows", type=int, default=1 << 20, help="table rows (default 1M)")
    pp.add_argument("--steps", type=int, default=50, help="timed batches (default 50)")
    pp.add_argument("--pull", choices=PULL_MODES, default="auto", help="pull mode")
    pp.add_argument("--json", action="store_true", help="print one JSON object")
    st = bsub.add_parser("straggler", help="training samples/s of BSP, SSP(3) and ASP with "
                         "and without one slow worker, in one run")
    st.add_argument("--servers", type=int, default=1, help="servers (default 1)")
    st.add_argument("--factor", type=float, default=3.0, help="how many times slower "
                    "worker 0 is (default 3)")
    st.add_argument("--rows", type=int, default=400_000, help="built-in rows per job, "
                    "train + test (default 400,000)")
    st.add_argument("--batch-size", type=int, default=512, help="rows per worker per step")
    st.add_argument("--jitter", type=float, default=0.0, help="every worker also sleeps a "
                    "random 0..T seconds a step (default 0)")
    st.add_argument("--repeats", type=int, default=3, help="runs of each job (default 3)")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    ba = bsub.add_parser("balance", help="training samples/s with and without moving "
                         "partitions by load, with even servers and one slow server, in "
                         "one run")
    ba.add_argument("--factor", type=float, default=3.0, help="how many times slower "
                    "server 0 is (default 3)")
    ba.add_argument("--rows", type=int, default=4_000_000, help="built-in rows per job, "
                    "train + test (default 4,000,000)")
    ba.add_argument("--sync", choices=SYNC_MODES, default="async", help="consistency "
                    "(default async: the servers are what limits the rate)")
    ba.add_argument("--epochs", type=int, default=1, help="epochs per job (default 1)")
    ba.add_argument("--model", choices=MODELS, default="fm", help="model (default fm)")
    ba.add_argument("--optimizer", choices=OPTIMIZERS, default="adam",
                    help="server optimizer (default adam)")
    ba.add_argument("--lr", type=float, default=0.005, help="learning rate (default 0.005)")
    ba.add_argument("--batch-size", type=int, default=2048, help="rows per worker per step "
                    "(default 2048)")
    ba.add_argument("--embedding-dim", type=int, default=16, help="FM embedding size")
    ba.add_argument("--repeats", type=int, default=3, help="runs of each job (default 3)")
    ba.add_argument("--even-only", action="store_true", help="only the even servers' jobs "
                    "(static, balanced, static again): what balancing costs when nothing "
                    "moves, with more repeats in the same time")
    ba.add_argument("--json", action="store_true", help="print one JSON object")
    tf = bsub.add_parser("traffic", help="push and pull bytes per codec, samples/s on slow "
                         "links and with the pull cache, in one run")
    tf.add_argument("--servers", type=int, default=1, help="servers (default 1)")
    tf.add_argument("--rows", type=int, default=200_000, help="built-in rows per job, "
                    "train + test (default 200,000)")
    tf.add_argument("--batch-size", type=int, default=512, help="rows per worker per step "
                    "(default 512)")
    tf.add_argument("--embedding-dim", type=int, default=16, help="FM embedding size "
                    "(default 16)")
    tf.add_argument("--keep", type=float, default=0.1, help="topk: share of rows sent "
                    "(default 0.1)")
    tf.add_argument("--cache-rows", type=int, default=1 << 18, help="--pull-cache of the "
                    "cache job (default 262,144)")
    tf.add_argument("--repeats", type=int, default=3, help="runs of each job (default 3)")
    tf.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def add_prep_parser(sub: argparse._SubParsersAction) -> None:
    """``mpips prep IN... --format F --out DIR``: text into binary shards."""
    pr = sub.add_parser("prep", help="convert text data into binary shards (HDF5) for "
                        "--data DIR", description="Convert text inputs into HDF5 shards "
                        "plus manifest.json. Under mpiexec each rank converts its byte "
                        "range of the inputs.")
    pr.add_argument("inputs", nargs="+", metavar="IN", help="text files, taken in order")
    pr.add_argument("--format", choices=FORMATS, help=f"input format (default {D.format})")
    pr.add_argument("--out", required=True, metavar="DIR", help="output folder (its old "
                    "shards and manifest are replaced)")
    pr.add_argument("--shards", type=int, metavar="K", help="output shards (default: one "
                    "per rank)")
    pr.add_argument("--config", metavar="FILE.toml", help="settings file: format, seed, "
                    "on-bad-line and the [csv] schema are used")
    pr.add_argument("--seed", type=int, help=f"hashing seed, recorded in the manifest "
                    f"(default {D.seed})")
    pr.add_argument("--on-bad-line", choices=BAD_LINE_MODES, help="error (default) or skip "
                    "and count malformed lines")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the --config file, then the flags given on the command line."""
    values = vars(args).copy()
    values.pop("command", None)
    path = values.pop("config", None)
    base = load_toml(path) if path else TrainConfig()
    return from_mapping(values, "command line", base)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in TOOLS:
        return run_tool(args)
    if args.command == "inspect":
        from .checkpoint.inspect import inspect

        return inspect(args.path)
    from mpi4py import MPI

    from .failures import abort_on_error, agree_on_setup, leave

    comm = MPI.COMM_WORLD
    if args.command == "train":
        from .job import prepare, train
        from .slurm import SlurmJob, catch_stop_signal, requeue, slurm_settings

        setup: dict = {}
        slurm = SlurmJob.from_environ()
        catch_stop_signal()

        def check() -> None:
            cfg = train_config(args)
            named = "run_name" in vars(args) or cfg.run_name != D.run_name
            setup["cfg"] = cfg = slurm_settings(cfg, slurm, named)
            setup["data"] = prepare(cfg, comm.Get_size(), comm.Get_rank())

        status = agree_on_setup(check, comm)
        if status is not None:
            return status
        if slurm is not None and comm.Get_rank() == 0:
            print(slurm.describe(comm.Get_size()), flush=True)

        def run() -> int:
            result = train(setup["cfg"], comm, data=setup["data"])
            stopped = result.metrics is not None and result.metrics["event"] == "stopped"
            if stopped and slurm is not None:
                print(f"[mpips] requeueing Slurm job {slurm.job_id}: it resumes from the "
                      f"checkpoint", flush=True)
                print(requeue(slurm), flush=True)
            if result.failures_survived:
                leave(0)
            return 0

        return abort_on_error(run, comm)
    if args.command == "prep":
        from .prep import check_prep, run_prep

        job: dict = {}
        status = agree_on_setup(lambda: job.update(job=check_prep(args, comm.Get_size())),
                                comm)
        if status is not None:
            return status

        def convert() -> int:
            run_prep(job["job"], comm)
            return 0

        return abort_on_error(convert, comm)
    if args.bench == "straggler":
        from .bench_sync import check_straggler, run_straggler

        check, run_bench = check_straggler, run_straggler
    elif args.bench == "traffic":
        from .bench_traffic import check_traffic, run_traffic

        check, run_bench = check_traffic, run_traffic
    elif args.bench == "balance":
        from .bench_balance import check_balance, run_balance

        check, run_bench = check_balance, run_balance
    else:
        from .bench import check_bench, run_pull_push

        check, run_bench = check_bench, run_pull_push
    status = agree_on_setup(lambda: check(args, comm.Get_size()), comm)
    if status is not None:
        return status
    return abort_on_error(lambda: run_bench(args, comm), comm)

if __name__ == "__main__":
    sys.exit(main())
