"""``mpips predict``: one probability per row of data, in input order, from a trained
model; AUC and log-loss where the rows have labels. One process, no MPI (for models
that do not fit in one, ``predict_ranks`` runs the same steps under ``mpiexec``).

Rows are cut into batches exactly as the training job's workers cut their test rows
(``Cut``): each worker's contiguous share in batches of ``eval_batch_rows``. The models'
matrix products give bits that depend on the batch a row is in, so this cut is what makes
the scores, AUC and log-loss of the job's own test rows equal the job's to the bit.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .config import TrainConfig, load_toml
from .data import Batch, Source, share
from .data.inputs import InputSpec
from .data.plan import eval_batch_rows, plan_data
from .durable import atomic_write, commit, tmp_name
from .errors import ConfigError
from .export import Model
from .metrics import auc, logloss
from .reports import finite_or_none

OUT_SUFFIXES = (".csv", ".npy")
# Settings that decide a model's keys or its shape: a --config file must agree on them.
MODEL_KEYS = ("model", "table_rows", "embedding_dim", "hidden", "fields", "seed")


@dataclass(frozen=True)
class Cut:
    """Rows [lo, hi) cut as ``workers`` workers cut their test rows: contiguous shares,
    each in batches of ``batch_rows``. ``batches`` lists (share, batch) in row order."""

    lo: int
    hi: int
    workers: int
    batch_rows: int

    def shares(self) -> list[tuple[int, int]]:
        return [share(self.lo, self.hi, w, self.workers) for w in range(self.workers)]

    def batches(self) -> list[tuple[int, int]]:
        return [(w, b) for w, (lo, hi) in enumerate(self.shares())
                for b in range(-(-(hi - lo) // self.batch_rows))]

    def rows(self, picks: Sequence[tuple[int, int]]) -> int:
        """Rows in the batches ``picks``."""
        shares = self.shares()
        return sum(min(self.batch_rows, shares[w][1] - shares[w][0] - b * self.batch_rows)
                   for w, b in picks)


def read_cut(source: Source, cut: Cut, picks: Sequence[tuple[int, int]]) -> Iterator[Batch]:
    """The batches ``picks`` of ``cut`` (in the order given), read from ``source``."""
    shares = cut.shares()
    i = 0
    while i < len(picks):
        j = i
        while j < len(picks) and picks[j][0] == picks[i][0]:
            j += 1
        yield from source.batches(*shares[picks[i][0]], cut.batch_rows,
                                  order=[b for _, b in picks[i:j]])
        i = j


@dataclass
class Rows:
    """Data to score: rows [lo, hi) of ``source``, whether they have labels, a name."""

    source: Source
    lo: int
    hi: int
    labeled: bool
    name: str

    def cut(self, model: Model) -> Cut:
        return Cut(self.lo, self.hi, model.workers, eval_batch_rows(model.cfg.batch_size))


def data_settings(model: Model, config: Optional[str], fmt: Optional[str],
                  on_bad: Optional[str]) -> tuple[InputSpec, TrainConfig]:
    """How to read data for ``model``: its own input description and settings, with a
    ``--config`` file's format, ``[csv]`` delimiter and on-bad-line, then the flags. The
    file must agree with the model on everything that decides its keys."""
    cfg, inputs = model.cfg, model.inputs
    if config is not None:
        given = load_toml(config, base=cfg)
        for key in MODEL_KEYS:
            if getattr(given, key) != getattr(cfg, key):
                raise ConfigError(f"{config}: {key.replace('_', '-')} is "
                                  f"{getattr(given, key)!r}, the model was trained with "
                                  f"{getattr(cfg, key)!r}")
        inputs.check_format(given.format)
        if given.csv != inputs.csv:
            same = inputs.csv is not None and given.csv is not None and dataclasses.replace(
                given.csv, delimiter=inputs.csv.delimiter) == inputs.csv
            if not same:
                raise ConfigError(f"{config}: its [csv] schema is not the model's (label, "
                                  f"numeric and categorical columns decide the keys)")
            inputs = dataclasses.replace(inputs, csv=given.csv)
        cfg = cfg.replace(format=given.format, on_bad_line=given.on_bad_line, csv=given.csv)
    inputs.check_format(fmt)
    return inputs, cfg.replace(on_bad_line=on_bad or cfg.on_bad_line)


def open_rows(model: Model, inputs: InputSpec, cfg: TrainConfig, data: Optional[str]
              ) -> Rows:
    """``data`` (a text file or a prepared folder), or with None the training job's own
    test rows: its ``--test`` data, or the rows it held out (read from its settings)."""
    if data is None:
        plan = plan_data(cfg)
        return Rows(plan.test, *plan.test_range, True, "the training job's test rows")
    source, labeled = inputs.source(Path(data), cfg.on_bad_line)
    return Rows(source, 0, source.rows, labeled, data)


def check_out(out: str) -> Path:
    """``--out`` must end in .csv or .npy and lie in an existing folder."""
    path = Path(out)
    if path.suffix not in OUT_SUFFIXES:
        raise ConfigError(f"--out {out}: must end in .csv (one probability a line) or .npy")
    if not path.resolve().parent.is_dir():
        raise ConfigError(f"--out {out}: folder {path.resolve().parent} does not exist")
    return path


def write_predictions(path: Path, probs: np.ndarray) -> None:
    """Probabilities in input order, written atomically: ``.csv`` a header ``p`` then one
    a line (shortest exact decimals), ``.npy`` a float64 array."""
    probs = np.asarray(probs, dtype=np.float64)
    tmp = tmp_name(path)
    if path.suffix == ".npy":
        with open(tmp, "wb") as fh:
            np.save(fh, probs, allow_pickle=False)
    else:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write("p\n")
            for lo in range(0, probs.size, 1 << 16):
                fh.write("".join(f"{p!r}\n" for p in probs[lo:lo + (1 << 16)].tolist()))
    commit(path)


class Meter:
    """Progress of long scoring: a line every ``every`` seconds (rows, rate, ETA)."""

    def __init__(self, total: int, every: float, quiet: bool = False,
                 label: str = "predict") -> None:
        self.total, self.every, self.quiet, self.label = total, every, quiet, label
        self.start = self.last = time.perf_counter()
        self.done = 0

    def add(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        if self.quiet or now - self.last < self.every or self.done >= self.total:
            return
        self.last = now
        rate = self.done / (now - self.start)
        print(f"[mpips] {self.label} {100 * self.done / max(self.total, 1):5.1f}% "
              f"{self.done:,}/{self.total:,} rows  {rate:,.0f} rows/s  ETA "
              f"{(self.total - self.done) / rate:.1f}s", flush=True)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def score(predict: Callable[[Batch], np.ndarray], batches: Iterator[Batch], meter: Meter
          ) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels (float64) of every batch, in order."""
    probs, labels = [], []
    for batch in batches:
        probs.append(predict(batch))
        labels.append(batch.labels.astype(np.float64))
        meter.add(len(batch))
    cat = lambda xs: np.concatenate(xs) if xs else np.empty(0)  # noqa: E731
    return cat(probs), cat(labels)


def record(model: Model, rows: Rows, out: Path, probs: np.ndarray, labels: np.ndarray,
           seconds: float, **extra: object) -> dict:
    """The JSON record of a prediction run: where from, how many rows, how fast, and
    (labelled rows) exact AUC and log-loss, as the training job computes them."""
    rec = {"event": "predict", "model": model.name, "source": model.source,
           "data": rows.name, "out": str(out), "rows": int(probs.size),
           "labeled": rows.labeled, "seconds": seconds,
           "rows_per_s": probs.size / seconds if seconds > 0 else None,
           "bad_lines_skipped": int(rows.source.bad_lines), **extra}
    if rows.labeled:
        rec.update(auc=auc(labels, probs), logloss=logloss(labels, probs))
    return rec


def finish(rec: dict, metrics_out: Optional[str]) -> None:
    """Write the record (``--metrics-out``) and print the closing line."""
    if metrics_out is not None:
        clean = {k: finite_or_none(v) if isinstance(v, float) else v for k, v in rec.items()}
        atomic_write(Path(metrics_out), (json.dumps(clean, allow_nan=False) + "\n").encode())
    line = (f"[mpips] predicted {rec['rows']:,} rows of {rec['data']} in {rec['seconds']:.2f}s "
            f"({rec['rows_per_s'] or 0:,.0f} rows/s) -> {rec['out']}")
    if "auc" in rec:
        line += f"\n[mpips] AUC {rec['auc']:.4f}  logloss {rec['logloss']:.4f}"
    if rec["bad_lines_skipped"]:
        line += (f"\n[mpips] skipped {rec['bad_lines_skipped']:,} bad line(s): they have no "
                 f"prediction")
    print(line, flush=True)


def check_metrics_out(path: Optional[str]) -> None:
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise ConfigError(f"--metrics-out {path}: folder {Path(path).resolve().parent} "
                          f"does not exist")


def own_test_scores(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels of the training job's own test rows (quietly)."""
    rows = open_rows(model, model.inputs, model.cfg, None)
    cut = rows.cut(model)
    return score(model.predict_batch, read_cut(rows.source, cut, cut.batches()),
                 Meter(rows.hi - rows.lo, 0.0, quiet=True))


@dataclass
class PredictJob:
    """A checked prediction run: the model, the rows to score, where the output goes."""

    model: Model
    rows: Rows
    out: Optional[Path]          # None on the ranks that do not write
    metrics_out: Optional[str]

    @property
    def cut(self) -> Cut:
        return self.rows.cut(self.model)

    def opening(self) -> str:
        return (f"[mpips] predict: {self.model.describe()} on {self.rows.name} "
                f"({self.rows.hi - self.rows.lo:,} rows)")

    def conclude(self, probs: np.ndarray, labels: np.ndarray, seconds: float,
                 **extra: object) -> dict:
        """Write the probabilities and the record; print the closing lines."""
        write_predictions(self.out, probs)
        rec = record(self.model, self.rows, self.out, probs, labels, seconds, **extra)
        finish(rec, self.metrics_out)
        return rec


def prepare(model_path: str, data: Optional[str], out: Optional[str],
            fmt: Optional[str] = None, config: Optional[str] = None,
            on_bad: Optional[str] = None, metrics_out: Optional[str] = None,
            read: bool = True) -> PredictJob:
    """Every check before any scoring: the output paths (None: this rank writes none),
    the model (``read`` False: a checkpoint whose tables stay on disk), the data and how
    to read them."""
    path = check_out(out) if out is not None else None
    check_metrics_out(metrics_out)
    model = Model.open(model_path) if read else Model.from_checkpoint(model_path, read=False)
    inputs, cfg = data_settings(model, config, fmt, on_bad)
    return PredictJob(model, open_rows(model, inputs, cfg, data), path, metrics_out)


def run_predict(model_path: str, data: Optional[str], out: str, fmt: Optional[str] = None,
                config: Optional[str] = None, on_bad: Optional[str] = None,
                metrics_out: Optional[str] = None, progress_seconds: float = 2.0) -> dict:
    """Score ``data`` with the model at ``model_path`` in this process; returns the
    record (also written to ``metrics_out``)."""
    job = prepare(model_path, data, out, fmt, config, on_bad, metrics_out)
    print(job.opening(), flush=True)
    job.model.predict_batch(job.model.warm_batch())
    cut = job.cut
    meter = Meter(job.rows.hi - job.rows.lo, progress_seconds)
    probs, labels = score(job.model.predict_batch,
                          read_cut(job.rows.source, cut, cut.batches()), meter)
    return job.conclude(probs, labels, meter.seconds)
