"""``mpips prep IN... --format F --out DIR [--shards K]``: text into binary shards.

The inputs, taken as one byte sequence, are cut at line starts into K near-equal parts;
a compressed input (``.gz``, ``.zst``) is never cut: it goes whole into the part that
holds its middle byte. Part j becomes ``shard-0000j.h5`` and rank r converts the
contiguous parts ``share(0, K, r, R)`` (so with K = R each rank converts about 1/R of the
bytes; with K < R some ranks have nothing to do, with K > R a rank writes several shards).
Shards hold their lines in input order, so row i of the data set is the same row whatever
R and K. Lines are parsed by the formats' compiled parsers (``parse_bytes``). Rank 0
prints the progress of all ranks while they work, and writes the manifest once every
shard is in place (see ``mpips.data.shards``).
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from mpi4py import MPI

from .config import TrainConfig, from_mapping, load_toml
from .data import share
from .data.compressed import Decompressed, input_size, open_input
from .data.lines import Piece, count_lines, line_blocks, max_colons, split_inputs
from .data.parse import Format, parse_bytes
from .data.plan import text_format
from .data.shards import Manifest, ShardWriter, clear, manifest_of, manifest_record, \
    shard_name, write_manifest
from .data.textsource import check_first_line
from .errors import ConfigError
from .prep_progress import PrepProgress
from .wire import bcast_json, gather_json, reduce_int


@dataclass
class PrepJob:
    """What to convert, checked on every rank before any work."""

    cfg: TrainConfig
    inputs: list[Path]
    out: Path
    shards: int


@dataclass
class ShardStats:
    """A converted shard: its manifest record, bad lines and field statistics."""

    index: int
    record: dict
    bad: int
    positives: float
    present: np.ndarray

    def doc(self) -> dict:
        """As JSON values, to send to rank 0."""
        return {"index": self.index, "record": self.record, "bad": int(self.bad),
                "positives": float(self.positives), "present": self.present.tolist()}

    @classmethod
    def of(cls, doc: dict) -> "ShardStats":
        return cls(doc["index"], doc["record"], doc["bad"], doc["positives"],
                   np.asarray(doc["present"]))


def check_prep(args: argparse.Namespace, size: int) -> PrepJob:
    """Settings, inputs and output folder, all before any rank starts work."""
    base = load_toml(args.config) if args.config else TrainConfig()
    given = {k: getattr(args, k) for k in ("format", "seed", "on_bad_line")
             if getattr(args, k) is not None}
    cfg = from_mapping(given, "command line", base)
    inputs = [Path(p) for p in args.inputs]
    shards = size if args.shards is None else args.shards
    if shards < 1:
        raise ConfigError(f"--shards must be >= 1, got {shards}")
    for path in inputs:
        fmt = text_format(path, cfg, width=1)        # missing, empty, header vs schema
        if cfg.on_bad_line == "error" and not fmt.padded:
            check_first_line(path, fmt)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if not out.resolve().parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.resolve().parent} does not exist")
    return PrepJob(cfg, inputs, out, shards)


def run_prep(job: PrepJob, comm: MPI.Intracomm, verbose: bool = True,
             progress_seconds: float = 10.0) -> Manifest:
    """Collective: convert this rank's parts (rank 0 printing everyone's progress every
    ``progress_seconds``), then rank 0 writes the manifest."""
    t0 = time.perf_counter()
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank == 0:
        job.out.mkdir(exist_ok=True)
        clear(job.out)
    run = bcast_json(comm, uuid.uuid4().hex if rank == 0 else None)
    parts = split_inputs(job.inputs, job.shards)
    mine = range(*share(0, job.shards, rank, size))
    formats = _formats(job, [p for j in mine for p in parts[j]], comm)
    starts = first_lines(job.inputs, [p for j in mine for p in parts[j]])
    progress = PrepProgress(comm, sum(input_size(p) for p in job.inputs), progress_seconds,
                            verbose)
    stats = [_convert(job, formats, parts[j], j, run, starts, progress) for j in mine]
    progress.finish()
    gathered = gather_json(comm, [s.doc() for s in stats])
    manifest = None
    if rank == 0:
        manifest = _manifest(job, formats[0], run,
                             [ShardStats.of(s) for ss in gathered for s in ss])
        write_manifest(job.out, manifest)
        if verbose:
            _report(job, manifest, time.perf_counter() - t0, size)
    return manifest_of(bcast_json(comm, manifest_record(manifest) if rank == 0 else None))


def _formats(job: PrepJob, pieces: list[Piece], comm: MPI.Intracomm) -> list[Format]:
    """Each input's format; libSVM widths agree over all ranks (the most features)."""
    cfg = job.cfg
    if cfg.format not in ("libsvm", "libfm", "libffm"):
        return [text_format(p, cfg) for p in job.inputs]
    per = 2 if cfg.format == "libffm" else 1
    local = max([max_colons(job.inputs[p.file], p.begin, p.stop(job.inputs[p.file])) // per
                 for p in pieces], default=0)
    width = reduce_int(comm, local, MPI.MAX)
    return [text_format(p, cfg, width) for p in job.inputs]


def first_lines(inputs: list[Path], pieces: list[Piece]) -> dict[tuple[int, int], int]:
    """The 1-based line number at which each piece starts, keyed (file, begin): each
    file's lines are counted once, up to this rank's last piece of it."""
    out: dict[tuple[int, int], int] = {}
    for f in {p.file for p in pieces}:
        line, at = 1, 0
        for begin in sorted(p.begin for p in pieces if p.file == f):
            line += count_lines(inputs[f], at, begin)     # pieces start at line starts
            out[(f, begin)], at = line, begin
    return out


def _convert(job: PrepJob, formats: list[Format], pieces: list[Piece], index: int,
             run: str, starts: dict[tuple[int, int], int], progress: PrepProgress
             ) -> ShardStats:
    """Parse the pieces of part ``index`` into its shard, a bounded block at a time."""
    fields = formats[0].fields
    writer = ShardWriter(job.out / shard_name(index), fields, run)
    bad, positives, present = 0, 0.0, np.zeros(fields, dtype=np.int64)
    for piece in pieces:
        path, fmt = job.inputs[piece.file], formats[piece.file]
        line = starts[(piece.file, piece.begin)]
        with open_input(path) as fh:
            stored = piece.begin
            for data in line_blocks(fh, piece.begin, piece.stop(path)):
                header = int(fmt.header and line == 1)    # each file's own header
                body = data[bytes(data).find(b"\n") + 1 or len(data):] \
                    if header else data
                parsed, nbad = parse_bytes(fmt, body, job.cfg.seed, path, line + header,
                                           job.cfg.on_bad_line)
                writer.append(parsed)
                bad += nbad
                positives += float(parsed.labels.sum())
                present += parsed.present.sum(axis=0)
                line += header + len(parsed) + nbad
                done = fh.consumed if isinstance(fh, Decompressed) else stored + len(data)
                progress.advance(done - stored, len(parsed))
                stored = done
    return ShardStats(index, writer.commit(), bad, positives, present)


def _manifest(job: PrepJob, fmt: Format, run: str, stats: list[ShardStats]) -> Manifest:
    stats = sorted(stats, key=lambda s: s.index)
    rows = sum(s.record["rows"] for s in stats)
    present = np.sum([s.present for s in stats], axis=0)
    stat_names = list(fmt.names) or [f"slot{i + 1}" for i in range(fmt.fields)]
    schema = asdict(job.cfg.csv) if fmt.name == "csv" and job.cfg.csv else None
    return Manifest(run=run, format=fmt.name, fields=fmt.fields, names=list(fmt.names),
                    padded=fmt.padded, seed=job.cfg.seed,
                    inputs=[str(p) for p in job.inputs], shards=[s.record for s in stats],
                    bad_lines=sum(s.bad for s in stats), schema=schema,
                    stats={"positives": sum(s.positives for s in stats),
                           "present": dict(zip(stat_names, (int(c) for c in present))),
                           "present_fraction": float(present.sum())
                           / max(1, rows * len(stat_names))})


def _report(job: PrepJob, manifest: Manifest, seconds: float, ranks: int) -> None:
    rows = manifest.rows
    print(f"[mpips] prep: {rows:,} rows of {len(job.inputs)} input(s) into "
          f"{len(manifest.shards)} shard(s) in {job.out} with {ranks} rank(s), "
          f"{seconds:.1f} s ({rows / max(seconds, 1e-9):,.0f} rows/s)", flush=True)
    if manifest.bad_lines:
        print(f"[mpips] prep: skipped {manifest.bad_lines:,} bad line(s) "
              f"(--on-bad-line skip)", file=sys.stderr, flush=True)
