"""The scheduler role: follow the workers' progress, show it, and compute final metrics."""
from __future__ import annotations

import json
import time
from typing import IO, Optional

import numpy as np

from .config import TrainConfig
from .metrics import auc, logloss
from .board import ClockBoard
from .pause import Coordinator
from .errors import ProtocolError
from .killing import KillSwitch
from .rebalance import LoadWatch
from .reports import PROGRESS_FIELDS, Evaluation, finite_or_none, partition_load_of, \
    progress_of, receive_evaluation, reduce_server_stats, server_load_of
from .topology import TAG_LOAD, TAG_PROGRESS, TAG_RECORD
from .wire import doc_of, poll_any
from .waiting import MAX_SLEEP, idle_poll
from .topology import Roles


LARGE_TABLES = 1 << 30     # from this many bytes a server's memory line is printed


class MetricsLog:
    """JSON-lines metrics file (one record per progress interval, then a final one)."""

    def __init__(self, path: Optional[str], append: bool = False) -> None:
        self.fh: Optional[IO[str]] = open(path, "a" if append else "w", encoding="utf-8") \
            if path else None

    def write(self, record: dict) -> None:
        """Append one record; NaN and infinite values become null (valid JSON)."""
        if self.fh:
            clean = {k: finite_or_none(v) if isinstance(v, float) else v
                     for k, v in record.items()}
            self.fh.write(json.dumps(clean, allow_nan=False) + "\n")
            self.fh.flush()

    def close(self) -> None:
        if self.fh:
            self.fh.close()


def _fmt_eta(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


class Progress:
    """The workers' latest progress records, and the line printed from them."""

    def __init__(self, n_workers: int, epochs: int, base: int = 0) -> None:
        self.base = base               # samples trained before a resume: not in the rates
        self.state = np.zeros((n_workers, PROGRESS_FIELDS))
        self.seen = np.zeros(n_workers, dtype=bool)
        self.epochs = epochs
        self.start: Optional[float] = None
        self._last = (0.0, 0.0, 0.0)   # time, samples, loss at the last line

    def update(self, worker: int, record: np.ndarray) -> None:
        """Take a worker's latest record; the clock starts with the first one."""
        if self.start is None:
            self.start = time.perf_counter()
        self.state[worker, :record.size] = record
        self.seen[worker] = True

    @property
    def finished(self) -> bool:
        return bool(self.seen.all() and self.state[:, 4].all())

    @property
    def new_samples(self) -> float:
        return float(self.state[:, 1].sum() - self.base)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start if self.start is not None else 0.0

    def entry(self, worker: int) -> Optional[dict]:
        """A finished worker's entry in a checkpoint's manifest (None: still training)."""
        if not (self.seen[worker] and self.state[worker, 4]):
            return None
        epoch, samples, loss, _, _, steps = self.state[worker, :6]
        return {"index": worker, "step": int(steps), "finished": True, "epoch": int(epoch),
                "samples": int(samples), "loss": float(loss), "rng": None}

    @property
    def rate(self) -> float:
        """Samples per second trained since this (re)start."""
        elapsed = self.elapsed
        return self.new_samples / elapsed if elapsed > 0 else 0.0

    @property
    def time_left(self) -> float:
        """Seconds the job is expected to need still, at its rate so far (inf: no rate
        yet)."""
        rate = self.rate
        left = self.state[:, 3].sum() - self.state[:, 1].sum()
        return float(left / rate) if rate > 0 else float("inf")

    def record(self) -> dict:
        """A progress record; the loss is the mean since the previous record."""
        elapsed = self.elapsed
        samples, loss = self.state[:, 1].sum(), self.state[:, 2].sum()
        planned = self.state[:, 3].sum()
        t0, s0, l0 = self._last
        self._last = (elapsed, samples, loss)
        rate = self.rate
        push, push_raw, pull, pull_raw = self.state[:, 6:10].sum(axis=0)
        per_s = 1e-6 / elapsed if elapsed > 0 else 0.0
        return {"event": "progress", "epoch": int(self.state[:, 0].min()) + 1,
                "samples": int(samples), "planned": int(planned), "seconds": elapsed,
                "samples_per_s": rate, "push_mb_s": push * per_s,
                "push_raw_mb_s": push_raw * per_s, "pull_mb_s": pull * per_s,
                "pull_raw_mb_s": pull_raw * per_s,
                "loss": (loss - l0) / (samples - s0) if samples > s0 else float("nan"),
                "eta_s": self.time_left}

    def line(self, r: dict) -> str:
        """The progress line printed from a record (with the servers' busy shares when
        there are several servers)."""
        pct = 100.0 * r["samples"] / r["planned"] if r["planned"] else 100.0
        busy = r.get("server_busy", [])
        servers = "  servers busy " + " ".join(f"{b:.0%}" for b in busy) \
            if len(busy) > 1 else ""
        wire = f"  push {r['push_mb_s']:.1f} MB/s ({r['push_raw_mb_s'] / r['push_mb_s']:.1f}x " \
            f"fewer)  pull {r['pull_mb_s']:.1f} MB/s" if r.get("push_mb_s") else ""
        if wire and r.get("pull_mb_s") and r["pull_raw_mb_s"] != r["pull_mb_s"]:
            wire += f" ({r['pull_raw_mb_s'] / r['pull_mb_s']:.1f}x fewer)"
        return (f"[mpips] epoch {min(r['epoch'], self.epochs)}/{self.epochs} {pct:5.1f}% "
                f"{r['samples']:,}/{r['planned']:,} samples  {r['samples_per_s']:,.0f} samples/s"
                f"  loss {r['loss']:.4f}  ETA {_fmt_eta(r['eta_s'])}{wire}{servers}")


def follow_progress(cfg: TrainConfig, roles: Roles, log: MetricsLog, coord: Coordinator,
                    loads: LoadWatch, verbose: bool = True,
                    progress: Optional[Progress] = None,
                    expect_final: bool = False) -> Progress:
    """Receive progress until every worker has finished, printing every interval; take
    the servers' and workers' load reports (and ask for a pause when the rebalancer wants
    a move); coordinate pauses: until the final checkpoint is written, or the job stopped
    at one, and every server has sent its last report."""
    progress = progress or Progress(roles.n_workers, cfg.epochs)
    last_print = time.perf_counter()
    kill = KillSwitch.of(cfg.kill(), roles.world_rank)

    def from_worker(worker: int, tag: int, buf: np.ndarray) -> None:
        nonlocal last_print
        if tag == TAG_PROGRESS:
            progress.update(worker, progress_of(buf))
            coord.latest_step = int(progress.state[:, 5].max())
            kill.reached(coord.latest_step)
            due = time.perf_counter() - last_print >= cfg.progress_seconds
            if due and not progress.finished and progress.new_samples > 0:
                last_print = time.perf_counter()
                r = dict(progress.record(), **loads.progress())
                log.write(r)
                if verbose:
                    print(progress.line(r), flush=True)
        elif tag == TAG_LOAD:
            loads.stats.partitions(partition_load_of(buf))
        elif tag == TAG_RECORD:
            coord.on_worker(worker, doc_of(buf), progress.entry, progress.elapsed)
        else:
            raise ProtocolError(f"worker {worker} sent a message with tag {tag}")

    def from_server(server: int, tag: int, buf: np.ndarray) -> None:
        if tag == TAG_LOAD:
            if loads.server(server, server_load_of(buf), coord.placement,
                            progress.time_left, coord.move_log.last_pause) \
                    and not coord.pending:
                coord.request(move=True)
        elif tag == TAG_RECORD:
            coord.on_server(server, doc_of(buf), progress.entry, progress.elapsed)
        else:
            raise ProtocolError(f"server {server} sent a message with tag {tag}")

    def poll() -> Optional[bool]:
        got = poll_any(roles.ctl)
        if got is not None:
            from_worker(roles.ctl_worker(got[0]), got[1], got[2])
        elif (got := poll_any(roles.world)) is not None:
            from_server(roles.world_server(got[0]), got[1], got[2])
        coord.tick(progress.start)
        coord.check(progress.entry, progress.elapsed)
        return True if got is not None else None

    def done() -> bool:
        final = not expect_final or coord.final_written
        ended = coord.stopped or (progress.finished and final and coord.settled)
        return ended and loads.all_final

    while not done():            # poll often while a pause is under way: it holds everyone
        idle_poll(poll, MAX_SLEEP if coord.pending else 5e-3)
    return progress


def final_record(cfg: TrainConfig, progress: Progress, seconds: float,
                 ev: Evaluation) -> dict:
    """The final metrics: exact AUC and log-loss over every test prediction."""
    samples = int(progress.state[:, 1].sum())
    probs, labels, true_p = ev.probs, ev.labels, ev.true_p
    rec = {"event": "final", "model": cfg.model, "optimizer": cfg.optimizer,
           "servers": cfg.servers, "workers": int(progress.state.shape[0]),
           "epochs": cfg.epochs, "auc": auc(labels, probs), "logloss": logloss(labels, probs),
           "test_rows": int(labels.size), "samples": samples,
           "worker_samples": [int(x) for x in progress.state[:, 1]],
           "worker_steps": [int(x) for x in progress.state[:, 5]], "seconds": seconds,
           "samples_per_s": (samples - progress.base) / seconds if seconds > 0
           else float("nan"),
           "train_loss": float(progress.state[:, 2].sum() / max(samples, 1))}
    if true_p.size:
        rec["oracle_auc"] = auc(labels, true_p)
        rec["oracle_logloss"] = logloss(labels, true_p)
    return rec


def summary(rec: dict) -> str:
    """The closing lines printed by the scheduler."""
    text = (f"[mpips] done: AUC {rec['auc']:.4f}  logloss {rec['logloss']:.4f} on "
            f"{rec['test_rows']:,} test rows; {rec['samples']:,} samples in "
            f"{rec['seconds']:.2f}s ({rec['samples_per_s']:,.0f} samples/s)")
    if rec.get("shard_updates") and rec.get("pacing") != "bsp":
        text += (f"\n[mpips] staleness (updates missed by a push's rows): mean "
                 f"{rec['staleness_mean']:.2f}, max {rec['staleness_max']}")
        if rec["ssp_violations"]:
            text += f"; SSP bound exceeded {rec['ssp_violations']} times"
    if rec.get("server_table_bytes", 0) >= LARGE_TABLES:
        text += (f"\n[mpips] largest server: {rec['server_peak_rss_bytes'] / 2**20:,.0f} MiB "
                 f"peak resident for {rec['server_table_bytes'] / 2**20:,.0f} MiB of rows "
                 f"and optimiser state ({rec['server_memory_ratio']:.2f}x)")
    if rec.get("bad_lines_skipped"):
        text += (f"\n[mpips] skipped {rec['bad_lines_skipped']:,} bad line(s) of the text "
                 f"data (--on-bad-line skip)")
    if "oracle_auc" in rec:
        text += (f"\n[mpips] best achievable (generator's own probabilities): AUC "
                 f"{rec['oracle_auc']:.4f}  logloss {rec['oracle_logloss']:.4f}; "
                 f"gap {rec['oracle_auc'] - rec['auc']:.4f}")
    return text


def validation_line(log: MetricsLog, progress: Progress, step: int, score: float,
                    coord: Coordinator, verbose: bool) -> None:
    """A validation's progress record (``val_auc``, the best so far) and its line."""
    st = coord.stopping
    log.write({"event": "progress", "samples": int(progress.state[:, 1].sum()),
               "seconds": progress.elapsed, "step": step, "val_auc": score,
               "best_val_auc": st.best_auc, "best_step": st.best_step})
    if verbose:
        best = st.best_auc if st.best_auc is not None else float("nan")
        end = "; stopping early" if coord.ended_early else ""
        print(f"[mpips] validation AUC {score:.4f} after step {step:,} (best {best:.4f} "
              f"after step {st.best_step:,}){end}", flush=True)


def run_scheduler(cfg: TrainConfig, roles: Roles, board: ClockBoard, tables: list[str],
                  sync: dict, coord: Coordinator, loads: LoadWatch, verbose: bool = True,
                  resumed: Optional[dict] = None, recovery: Optional[dict] = None) -> dict:
    """Follow training, then gather the evaluation and the servers' staleness; returns
    the final metrics record (``sync`` describes the consistency the tables got).
    ``coord`` coordinates checkpoints; ``resumed`` is the manifest a resumed job started
    from; ``recovery`` the failures it survived (under ULFM). A job stopped at a
    checkpoint skips the evaluation: its record says where."""
    log = MetricsLog(cfg.metrics_out, append=resumed is not None)
    workers = resumed["workers"] if resumed else []
    expect_final = cfg.checkpointing and not (workers and all(w["finished"] for w in workers))
    progress = Progress(roles.n_workers, cfg.epochs, sum(w["samples"] for w in workers))
    coord.on_validation = lambda step, score: validation_line(log, progress, step, score,
                                                              coord, verbose)
    try:
        progress = follow_progress(cfg, roles, log, coord, loads, verbose, progress,
                                   expect_final)
        seconds = time.perf_counter() - (progress.start or time.perf_counter())
        if not coord.stopped:
            if cfg.validating:       # the last parameters, and the best kept or restored
                coord.finish_validation(int(progress.state[:, 5].max()), progress.entry,
                                        progress.elapsed)
            coord.end()              # the parked workers go on to the evaluation
        board.close()
        if coord.stopped:
            rec = {"event": "stopped", "checkpoint": str(coord.written[-1]),
                   "samples": coord.saved_samples, "seconds": seconds}
        else:
            rec = final_record(cfg, progress, seconds,
                               receive_evaluation(roles.ctl, roles.n_workers))
        if resumed is not None:
            rec.update(resumed_from_step=resumed["step"], resume_moved_rows=resumed["moved_rows"],
                       resume_moved_rows_minimum=resumed["moved_rows_minimum"])
        if coord.written:
            rec["checkpoint"] = str(coord.written[-1])
        rec.update(coord.validation_summary())
        rec.update(sync, **(recovery or {}))
        rec.update(coord.move_log.summary(coord.placement.epoch), **loads.summary(),
                   rebalance=loads.rebalancer is not None)
        rec.update(reduce_server_stats(roles.world, tables) or {})
        log.write(rec)
    finally:
        log.close()
    if verbose:
        print(summary(rec) if rec["event"] == "final" else
              f"[mpips] stopped after checkpoint {rec['checkpoint']}; the same command "
              f"with --resume continues (a Slurm job requeues itself)", flush=True)
    return rec
