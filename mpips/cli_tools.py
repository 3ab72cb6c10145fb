"""The command lines of what comes after training: ``mpips predict``, ``mpips export`` and
``mpips report``. They run in one process (``predict --servers S`` under ``mpiexec``)."""
from __future__ import annotations

import argparse
import os
import sys

from .config import FORMATS
from .data.parse import BAD_LINE_MODES
from .errors import ConfigError, MpipsError

TOOLS = ("predict", "export", "report")
# Set by the launchers of MPICH (and Intel MPI, Slurm's PMI-2) and of Open MPI.
LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``predict``, ``export`` and ``report`` on the ``mpips`` command line."""
    pr = sub.add_parser("predict", help="score data with a trained model: one probability "
                        "per row (no mpiexec needed)", description="Score rows with a "
                        "checkpoint or an exported model: one probability per row, in input "
                        "order; AUC and log-loss where the rows have labels. Runs in one "
                        "process; with --servers under mpiexec for models that do not fit "
                        "in one.")
    pr.add_argument("model", metavar="MODEL", help="a run or checkpoint folder (its latest "
                    "checkpoint), or a file written by 'mpips export'")
    pr.add_argument("--data", metavar="PATH", help="rows to score: a text file in the "
                    "model's format (with or without labels) or a folder of 'mpips prep' "
                    "(default: the training job's own test rows, read from its settings)")
    pr.add_argument("--format", choices=FORMATS, help="format of text --data: must be the "
                    "model's own (the default)")
    pr.add_argument("--config", metavar="FILE.toml", help="settings file (e.g. the training "
                    "one): format, [csv] delimiter and on-bad-line are used; settings that "
                    "decide the keys must agree with the model")
    pr.add_argument("--on-bad-line", choices=BAD_LINE_MODES, help="error (default: the "
                    "training job's setting) or skip malformed lines, which then get no "
                    "prediction")
    pr.add_argument("--out", required=True, metavar="FILE", help="FILE.csv: a header line "
                    "'p', then one probability a line; FILE.npy: a float64 array")
    pr.add_argument("--metrics-out", metavar="FILE", help="write a JSON record: rows, "
                    "seconds, rows/s, and AUC and log-loss where the rows have labels")
    pr.add_argument("--servers", type=int, metavar="S", help="under mpiexec: S servers hold "
                    "the checkpoint's shards, rank 0 writes the output, the other ranks score")
    pr.add_argument("--progress-seconds", type=float, default=2.0, metavar="T",
                    help="seconds between progress lines (default 2)")
    ex = sub.add_parser("export", help="write a checkpoint as one self-describing model "
                        "file (HDF5)", description="Write a checkpoint's model as one HDF5 "
                        "file: every table in key order with its keys, the dense layers, "
                        "and how raw input becomes keys; checksummed, without optimiser "
                        "state. Load it with mpips.export.Model.load(path).")
    ex.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint folder, or a run "
                    "folder (its latest checkpoint)")
    ex.add_argument("--out", required=True, metavar="FILE.h5", help="the model file")
    ex.add_argument("--onnx", metavar="FILE.onnx", help="also write DeepFM's MLP tower as "
                    "ONNX (needs pip install 'mpips[onnx]')")
    rp = sub.add_parser("report", help="plots and an HTML page from --metrics-out files",
                        description="Turn the JSON lines of one or more runs' --metrics-out "
                        "into PNG plots and one self-contained HTML page, DIR/index.html "
                        "(needs matplotlib: pip install 'mpips[report]').")
    rp.add_argument("metrics", nargs="+", metavar="METRICS.jsonl", help="a run's metrics; "
                    "several runs are drawn side by side")
    rp.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and "
                    "the PNGs (created if missing)")
    rp.add_argument("--title", help="the page's title (default: the metrics files' names)")
    rp.add_argument("--score-checkpoints", action="store_true", help="also score every "
                    "checkpoint each run kept on its test rows, for test AUC over training")


def run_tool(args: argparse.Namespace) -> int:
    """Run ``args.command`` (one of ``TOOLS``); a user error prints one line, exit 2."""
    try:
        if args.command == "predict" and args.servers is not None:
            from .predict_ranks import run_predict_ranks

            return run_predict_ranks(args)
        launched = [int(os.environ.get(v, "1") or 1) for v in LAUNCHER_SIZE]
        if max(launched) > 1:
            raise ConfigError(f"mpips {args.command} runs in one process; under mpiexec "
                              f"'predict' needs --servers S")
        return _one_process(args)
    except MpipsError as exc:
        print(f"mpips: error: {exc}", file=sys.stderr, flush=True)
        return 2


def _one_process(args: argparse.Namespace) -> int:
    if args.command == "predict":
        from .predict import run_predict

        run_predict(args.model, args.data, args.out, args.format, args.config,
                    args.on_bad_line, args.metrics_out, args.progress_seconds)
    elif args.command == "export":
        from .export import export

        export(args.checkpoint, args.out, args.onnx)
    else:
        from .report import report

        report(args.metrics, args.out, args.title, args.score_checkpoints)
    return 0
