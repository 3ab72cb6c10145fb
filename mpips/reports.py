"""Messages to the scheduler and their decoding: workers' progress, evaluation and
partition loads (on ``ctl``), servers' load (on the world), and the servers' statistics
gathered when the job ends. The scheduler takes every message of a rank with one probe
(``wire.poll_any``), so each rank's messages arrive in the order they were sent."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from mpi4py import MPI

from .clocks import StalenessLog
from .load import ServerLoad
from .push import Outbox
from .topology import SCHEDULER_RANK, TAG_LOAD, TAG_PROGRESS
from .traffic import KINDS
from .waiting import wait_all

# A progress record: epoch, samples done, summed loss so far, samples planned, finished,
# steps done; then the bytes so far (``traffic.KINDS``: push, push as float32, pull, pull
# as float32).
PROGRESS_FIELDS = 10


@dataclass
class Evaluation:
    """Test predictions, labels and (built-in data only) the generator's probabilities."""

    probs: np.ndarray
    labels: np.ndarray
    true_p: np.ndarray = field(default_factory=lambda: np.empty(0))


def send_progress(ctl: MPI.Intracomm, epoch: int, samples: int, loss: float, planned: int,
                  finished: bool, steps: int, traffic: Sequence[int] = (0, 0, 0, 0)) -> None:
    """One progress record to the scheduler (small: sent eagerly, returns at once)."""
    msg = np.array([epoch, samples, loss, planned, finished, steps, *traffic],
                   dtype=np.float64)
    ctl.Send(msg, 0, TAG_PROGRESS)


def progress_of(buf: np.ndarray) -> np.ndarray:
    """A received progress record."""
    return buf.view(np.float64)[:PROGRESS_FIELDS].copy()


def send_partition_load(ctl: MPI.Intracomm, outbox: Outbox, counts: np.ndarray) -> None:
    """A worker's partition loads since its last report (float32, one per partition)."""
    outbox.post(ctl, [np.ascontiguousarray(counts, np.float32)], [SCHEDULER_RANK], TAG_LOAD)


def partition_load_of(buf: np.ndarray) -> np.ndarray:
    return buf.view(np.float32)


def send_server_load(world: MPI.Intracomm, load: ServerLoad) -> None:
    """A server's load report (small: sent eagerly, returns at once)."""
    world.Send(load.encode(), SCHEDULER_RANK, TAG_LOAD)


def server_load_of(buf: np.ndarray) -> ServerLoad:
    return ServerLoad.decode(buf.view(np.float64))


def send_evaluation(ctl: MPI.Intracomm, ev: Evaluation) -> None:
    """This worker's predictions to the scheduler (pairs with ``receive_evaluation``)."""
    wait_all([ctl.Igather(np.array([ev.labels.size, ev.true_p.size], np.int64), None, 0)])
    for arr in (ev.probs, ev.labels, ev.true_p):
        wait_all([ctl.Igatherv(np.ascontiguousarray(arr, np.float64), None, 0)])


def receive_evaluation(ctl: MPI.Intracomm, n_workers: int) -> Evaluation:
    """Every worker's predictions, concatenated in worker order (on the scheduler)."""
    counts = np.zeros((n_workers + 1, 2), dtype=np.int64)
    wait_all([ctl.Igather(np.zeros(2, np.int64), counts, 0)])
    out: list[np.ndarray] = []
    for col in (0, 0, 1):
        c = counts[:, col]
        buf = np.empty(int(c.sum()), dtype=np.float64)
        wait_all([ctl.Igatherv(np.empty(0), [buf, c], 0)])
        out.append(buf)
    return Evaluation(*out)


def finite_or_none(value: float) -> Optional[float]:
    """JSON has no NaN or infinity: such a metric is written as null."""
    return value if np.isfinite(value) else None


def reduce_server_stats(comm: MPI.Intracomm, tables: list[str],
                        staleness: Optional[np.ndarray] = None, applied: int = 0,
                        violations: int = 0, memory: tuple[int, int] = (0, 0),
                        bad_lines: int = 0, traffic: Optional[np.ndarray] = None,
                        dropped: int = 0, rows: tuple[int, int] = (0, 0)
                        ) -> Optional[dict]:
    """Collective over the world: sum every server's staleness histograms (tables x bins),
    shard updates and SSP violations onto rank 0 (the scheduler), which gets the metrics;
    other ranks pass nothing and get None. With several servers a push updates one shard
    per server, so it counts once per server it reached. ``memory`` is a server's (peak
    resident bytes, raw bytes of rows and state); the largest of each is kept. A worker
    passes the malformed text lines it skipped (``--on-bad-line skip``), its bytes per
    table (tables x ``traffic.KINDS``) and the rows whose rounding error feedback dropped;
    a server the rows it admitted and evicted (``rows``)."""
    hist = np.zeros((len(tables), StalenessLog.BINS), dtype=np.int64)
    if staleness is not None:
        hist += staleness
    counts = np.array([applied, violations, bad_lines, dropped, *rows], dtype=np.int64)
    mem = np.array(memory, dtype=np.int64)
    sent = np.zeros((len(tables), len(KINDS)), dtype=np.int64)
    if traffic is not None:
        sent += traffic
    out_hist, out_counts, out_mem = np.zeros_like(hist), np.zeros_like(counts), np.zeros_like(mem)
    out_sent = np.zeros_like(sent)
    wait_all([comm.Ireduce(hist, out_hist, MPI.SUM, 0),
              comm.Ireduce(counts, out_counts, MPI.SUM, 0),
              comm.Ireduce(mem, out_mem, MPI.MAX, 0),
              comm.Ireduce(sent, out_sent, MPI.SUM, 0)])
    if comm.Get_rank() != 0:
        return None
    bytes_of = {kind: int(out_sent[:, k].sum()) for k, kind in enumerate(KINDS)}
    bytes_of["traffic"] = {name: dict(zip(KINDS, map(int, row)))
                           for name, row in zip(tables, out_sent)}
    per_table = {name: StalenessLog.summary(h) for name, h in zip(tables, out_hist)}
    overall = StalenessLog.summary(out_hist.sum(axis=0))
    return {"staleness": per_table, "staleness_mean": overall["mean"],
            "staleness_max": overall["max"], "ssp_violations": int(out_counts[1]),
            "shard_updates": int(out_counts[0]), "bad_lines_skipped": int(out_counts[2]),
            "admitted_rows": int(out_counts[4]), "evicted_rows": int(out_counts[5]),
            "server_peak_rss_bytes": int(out_mem[0]), "server_table_bytes": int(out_mem[1]),
            "server_memory_ratio": float(out_mem[0] / out_mem[1]) if out_mem[1] else None,
            "residual_rows_dropped": int(out_counts[3]), **bytes_of}
