"""Pauses over MPI, every side of them: a worker stops and waits for the verdict; a server
reports that it paused, writes its checkpoint file when told, moves partitions when the
placement changes; the scheduler's ``Coordinator`` drives ``pausing.PauseMachine``.
Workers that finished training ``park``: they still take part in moves (the windows are
shared by every rank of ``ps``) until the scheduler says training is over.

Ranks tell the scheduler things as small JSON documents; the scheduler answers with int64
arrays (``pausing.Reply``): nothing received can run code.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .board import ClockBoard
from .checkpoint import manifest
from .checkpoint.layout import BEST
from .checkpoint.saving import link_best, publish_checkpoint, restore_server, \
    write_server_checkpoint
from .client import TableClient
from .clocks import StalenessLog
from .config import TrainConfig
from .errors import ProtocolError
from .models import TableSpec
from .metrics import auc
from .pausing import END, EVAL, GO, RESTORE, WRITE, AskWrite, Evaluate, PauseMachine, \
    Planner, PauseSchedule, Publish, Reply, Verdict
from .placement import Placement
from .reports import Evaluation, receive_evaluation, send_evaluation
from .ring import PARTITIONS, VNODES
from .store import ShardStore
from .topology import SCHEDULER_RANK, TAG_RECORD, TAG_REPLY, Roles
from .validation import Decision, EarlyStopping, EvalSchedule
from .waiting import idle_poll
from .wire import doc_of, poll_any, send_ints, send_json, wait_ints


def _wait_reply(comm, tag: int = TAG_REPLY) -> Reply:
    return Reply.decode(wait_ints(comm, SCHEDULER_RANK, tag))


def _take_up(reply: Reply, placement: Placement) -> Optional[Placement]:
    """The placement a reply moves to (None: no moves), checked against its epoch."""
    if reply.moves is None:
        return None
    new = placement.after(reply.moves)
    if new.epoch != reply.epoch:
        raise ProtocolError(f"a move to epoch {reply.epoch} reached a rank at epoch "
                            f"{placement.epoch}")
    return new


# ---- worker side -------------------------------------------------------------------------
Validate = Optional[Callable[[], Evaluation]]


def _worker_reply(roles: Roles, validate: Validate) -> Reply:
    """The scheduler's next reply to a waiting worker; each time it asks (``EVAL``) the
    worker first scores its share of the validation rows (``validate``) and sends them."""
    while (reply := _wait_reply(roles.ctl)).kind == EVAL:
        if validate is None:
            raise ProtocolError(f"worker {roles.index} asked to validate in a job without "
                                f"validation rows")
        send_evaluation(roles.ctl, validate())
    return reply


def worker_pause(roles: Roles, client: TableClient, label: int, record: dict,
                 validate: Validate = None) -> Reply:
    """Stop before step ``label`` (this worker's pushes are all applied): mark it on every
    server, send the scheduler ``record`` (where to resume), wait for the verdict (scoring
    the validation rows if asked) and take up a new placement if it brings one. Returns
    the verdict: ``stop`` (at a checkpoint) or ``early`` (training is over) end training."""
    client.mark(label)
    send_json(roles.ctl, {"kind": "stopped", **record}, SCHEDULER_RANK, TAG_RECORD)
    reply = _worker_reply(roles, validate)
    if reply.kind != GO:
        raise ProtocolError(f"worker {roles.index} paused and got reply {reply.kind}")
    new = _take_up(reply, client.placement)
    if new is not None:
        client.adopt(new)
    return reply


def park(roles: Roles, client: TableClient, validate: Validate = None) -> None:
    """A worker that finished training: take part in every move and validation until
    training is over."""
    while (reply := _worker_reply(roles, validate)).kind != END:
        new = _take_up(reply, client.placement)
        if reply.kind != GO or new is None:
            raise ProtocolError(f"parked worker {roles.index} got reply {reply.kind}")
        client.adopt(new)


# ---- server side -------------------------------------------------------------------------
def _write(roles: Roles, store: ShardStore, log: StalenessLog, run_dir: Optional[Path],
           reply: Reply, final: bool = False) -> None:
    """Write this server's file of the checkpoint ``reply`` asks for (the periodic one if
    it is kept, else the best parameters) and tell the scheduler."""
    if run_dir is None:
        raise ProtocolError("asked to write a checkpoint in a job that writes none")
    record = write_server_checkpoint(store, log, run_dir, reply.step, final,
                                     best=not reply.keep)
    send_json(roles.world, {"kind": "wrote", **record}, SCHEDULER_RANK, TAG_RECORD)


def server_pause(roles: Roles, store: ShardStore, log: StalenessLog, run_dir: Optional[Path],
                 label: int, workers: Sequence[int]) -> Reply:
    """Every worker still training stopped before ``label``: tell the scheduler, write
    this server's checkpoint file if asked, take up a new placement if the verdict brings
    one. Returns the verdict (``stop``, ``early``: the job is to stop)."""
    world = roles.world
    send_json(world, {"kind": "paused", "index": roles.index, "label": label,
                      "workers": list(workers)}, SCHEDULER_RANK, TAG_RECORD)
    reply = _wait_reply(world)
    if reply.kind == WRITE:
        _write(roles, store, log, run_dir, reply)
        reply = _wait_reply(world)
    if reply.kind != GO:
        raise ProtocolError(f"server {roles.index} paused and got reply {reply.kind}")
    new = _take_up(reply, store.placement)
    if new is not None:
        report = store.move(new)
        send_json(world, {"kind": "moved", "index": roles.index, "epoch": new.epoch,
                          "seconds": report.seconds, "sent_rows": report.sent_rows,
                          "received_rows": report.received_rows, "bytes": report.bytes,
                          "new_windows": report.new_windows}, SCHEDULER_RANK, TAG_RECORD)
    return reply


def server_end(roles: Roles, store: ShardStore, run_dir: Path) -> None:
    """After training, with early stopping: write the best parameters if the last ones
    are the best, or restore the run's ``best`` checkpoint into the shards, as the
    scheduler says, until it says the end."""
    while (reply := _wait_reply(roles.world)).kind != END:
        if reply.kind == WRITE:
            _write(roles, store, StalenessLog(store.names), run_dir, reply, final=True)
        elif reply.kind == RESTORE:
            best = run_dir / BEST
            restore_server(store, StalenessLog(store.names), manifest.load(best), best)
            send_json(roles.world, {"kind": "restored", "index": roles.index},
                      SCHEDULER_RANK, TAG_RECORD)
        else:
            raise ProtocolError(f"server {roles.index} got reply {reply.kind} after training")


def server_final(roles: Roles, store: ShardStore, log: StalenessLog, run_dir: Path,
                 steps: int) -> None:
    """The checkpoint after training (every worker finished): write, report, wait until
    the scheduler has published it."""
    record = write_server_checkpoint(store, log, run_dir, steps, True)
    send_json(roles.world, {"kind": "wrote", **record}, SCHEDULER_RANK, TAG_RECORD)
    if _wait_reply(roles.world).kind != END:
        raise ProtocolError(f"server {roles.index}: no end after the final checkpoint")


# ---- scheduler side ----------------------------------------------------------------------
@dataclass
class MoveLog:
    """What the job's changes of placement cost: per move, its partitions, rows, bytes,
    the longest server's move time and the whole pause (first stop to last move)."""

    moves: list[dict] = field(default_factory=list)
    joined: int = 0

    @property
    def last_pause(self) -> float:
        """Seconds the latest move's pause took (0: no move yet), what the next may cost."""
        return float(self.moves[-1]["pause_seconds"]) if self.moves else 0.0

    def summary(self, epoch: int) -> dict:
        return {"partition_moves": sum(m["partitions"] for m in self.moves),
                "moved_rows": sum(m["rows"] for m in self.moves),
                "moved_bytes": sum(m["bytes"] for m in self.moves),
                "moves": len(self.moves), "map_epoch": epoch, "standby_joined": self.joined,
                "move_seconds": [m["seconds"] for m in self.moves],
                "move_pause_seconds": [m["pause_seconds"] for m in self.moves]}


class Coordinator:
    """The scheduler's part of pauses: ask for them (a timer, the stop signal, a wanted
    move), feed the servers' and workers' records to ``PauseMachine``, and carry out what
    it decides: ask servers to write, publish manifests, send verdicts and new
    placements."""

    def __init__(self, cfg: TrainConfig, roles: Roles, board: ClockBoard,
                 specs: Sequence[TableSpec], slots: Sequence[str], placement: Placement,
                 planner: Planner, stop_requested: Callable[[], bool],
                 seconds_before: float = 0.0, verbose: bool = True,
                 balanced: bool = False,
                 after_pause: Callable[[Placement], None] = lambda placement: None,
                 stopping: Optional[EarlyStopping] = None,
                 validations: EvalSchedule = EvalSchedule()) -> None:
        """``stop_requested()`` tells whether the job was asked to stop (a signal);
        ``balanced`` workers share a pool of batches, whose counters the manifest keeps;
        ``planner`` gives the moves of a pause; ``after_pause`` hears of every pause's
        end, with the placement from then on. A validating job passes its history
        (``stopping``, resumed from a checkpoint's) and when it validates."""
        self.after_pause = after_pause
        self.stopping = stopping
        self.on_validation: Callable[[int, float], None] = lambda step, score: None
        self.best_path: Optional[Path] = None
        self.ended_early = False
        self.cfg, self.roles, self.board, self.verbose = cfg, roles, board, verbose
        self.balanced = balanced
        self.specs, self.slots = list(specs), list(slots)
        self.stop_requested, self.seconds_before = stop_requested, seconds_before
        self.machine = PauseMachine(roles.n_servers, roles.n_workers,
                                    pause_schedule(cfg, validations),
                                    cfg.checkpointing, planner, placement)
        self.last_request = time.perf_counter()
        self.signalled = False     # the stop signal has been seen
        self.stopped = False       # the job stopped at a checkpoint: workers will not finish
        self.written: list[Path] = []
        self.final_written = False
        self.saved_samples = 0     # samples trained when the latest checkpoint was taken
        self.saved_step: Optional[int] = None    # the step of the latest checkpoint
        self.latest_step = 0       # the most steps any worker has reported
        self.move_log = MoveLog()
        self._pause_began: Optional[float] = None
        self._moving: Optional[dict] = None      # the move whose servers are reporting

    def request(self, checkpoint: bool = False, stop: bool = False,
                move: bool = False) -> None:
        """Ask the workers for a pause at their next possible step."""
        self.machine.request(checkpoint, stop, move)
        self.board.request()
        if checkpoint or stop:
            self.last_request = time.perf_counter()

    @property
    def pending(self) -> bool:
        """A pause was asked for and has not happened yet (or a move is in progress)."""
        return self.machine.pending or self._moving is not None

    @property
    def placement(self) -> Placement:
        """The job's placement (after the moves of the pauses so far)."""
        return self.machine.placement

    @property
    def settled(self) -> bool:
        """No move is still reporting (its records must not be left for a later job)."""
        return self._moving is None

    def tick(self, progress_start: Optional[float]) -> None:
        """The stop signal asks for a checkpoint and a stop (ignored, with a warning, in a
        job that writes no checkpoints); the timer, every ``--checkpoint-seconds``, for a
        checkpoint."""
        if self.stop_requested() and not self.signalled:
            self.signalled = True
            if self.cfg.checkpointing:
                self.request(stop=True)
            else:
                print("mpips: warning: stop signal ignored: this job writes no checkpoints "
                      "(--checkpoint-every or --checkpoint-seconds)", file=sys.stderr,
                      flush=True)
            return
        every = self.cfg.checkpoint_seconds
        if every > 0 and progress_start is not None \
                and time.perf_counter() - self.last_request >= every:
            self.request(checkpoint=True)

    def on_server(self, server: int, doc: dict, finished: Callable[[int], Optional[dict]],
                  elapsed: float) -> None:
        """A server's record: it paused, wrote its checkpoint file or moved."""
        kind = doc.pop("kind")
        if kind == "paused":
            self._began()
            actions = self.machine.server_paused(server, doc["label"], doc["workers"],
                                                 finished)
        elif kind == "wrote":
            actions = self.machine.server_wrote(server, doc, finished)
        elif kind == "moved" and self._moving is not None:
            self._moved(server, doc)
            return
        else:
            raise ProtocolError(f"server {server} sent an unexpected {kind!r} record")
        self._carry_out_all(actions, elapsed)

    def on_worker(self, worker: int, doc: dict, finished: Callable[[int], Optional[dict]],
                  elapsed: float) -> None:
        """A worker stopped for a pause; ``doc`` is where it stands."""
        self._began()
        doc.pop("kind")
        self._carry_out_all(self.machine.worker_stopped(worker, doc, finished), elapsed)

    def check(self, finished: Callable[[int], Optional[dict]], elapsed: float) -> None:
        """Complete a pause or the final checkpoint that waited for a worker to finish."""
        self._carry_out_all(self.machine.check(finished), elapsed)

    def _began(self) -> None:
        if self._pause_began is None:
            self._pause_began = time.perf_counter()

    def _carry_out_all(self, actions: list, elapsed: float) -> None:
        for action in actions:
            self._carry_out(action, elapsed)

    @property
    def servers(self) -> list[int]:
        return [self.roles.server_world_rank(s) for s in range(self.roles.n_servers)]

    def _carry_out(self, action: AskWrite | Publish | Verdict | Evaluate,
                   elapsed: float) -> None:
        servers = self.servers
        if isinstance(action, Evaluate):
            decision = self.validate(action.step)
            early = self.cfg.early_stop > 0
            self._carry_out_all(self.machine.evaluated(decision.best and early,
                                                       decision.stop), elapsed)
        elif isinstance(action, AskWrite):
            send_ints(self.roles.world, Reply(WRITE, action.step, keep=action.keep,
                                              best=action.best).encode(), servers, TAG_REPLY)
        elif isinstance(action, Publish):
            self._publish(action, elapsed)
            if action.final:
                send_ints(self.roles.world, Reply(END).encode(), servers, TAG_REPLY)
        else:
            self._verdict(action, servers)

    def _publish(self, action: Publish, elapsed: float) -> None:
        ring = {"servers": self.roles.n_servers, "standby": self.roles.standby,
                "partitions": PARTITIONS, "vnodes": VNODES, "epoch": self.placement.epoch}
        workers = list(action.workers)
        if self.balanced and not action.final:     # every worker has stopped taking batches
            counters = self.board.counters()
            workers = [dict(w, pool=int(counters[w["index"]])) for w in workers]
        extra = {"validation": self.stopping.doc()} if self.stopping is not None else None
        seconds = self.seconds_before + elapsed
        if action.keep:
            path = publish_checkpoint(self.cfg, self.specs, self.slots, ring, action.servers,
                                      workers, action.step, action.final, seconds, extra)
            self.written.append(path)
            self.final_written = action.final
            self.saved_samples = sum(int(w["samples"]) for w in workers)
            self.saved_step = action.step
            if action.best:
                self.best_path = link_best(self.cfg, path, extra)
        else:
            path = self.best_path = publish_checkpoint(
                self.cfg, self.specs, self.slots, ring, action.servers, workers, action.step,
                action.final, seconds, extra, best=True)
        if self.verbose:
            size = sum(s["bytes"] for s in action.servers)
            slowest = max(s["write_seconds"] for s in action.servers)
            print(f"[mpips] checkpoint {path}: step {action.step}, {size / 2**20:,.1f} MiB "
                  f"({size / 2**20 / max(slowest, 1e-9):,.0f} MiB/s)"
                  + (" (also the best)" if action.best and action.keep else "")
                  + (", stopping" if action.stop else ""), flush=True)
        self.last_request = time.perf_counter()

    # ---- validation ----------------------------------------------------------------------
    def validate(self, step: int, last: bool = False) -> Decision:
        """Every worker scores its share of the validation rows (all workers wait for a
        reply: they paused or finished); the AUC goes into the history. A stop decided
        at a pause ends training early; after the ``last`` step there is none to end."""
        ctl = self.roles.ctl
        send_ints(ctl, Reply(EVAL, step).encode(),
                  [self.roles.worker_ctl_rank(w) for w in range(self.roles.n_workers)],
                  TAG_REPLY)
        ev = receive_evaluation(ctl, self.roles.n_workers)
        score = auc(ev.labels, ev.probs)
        decision = self.stopping.observe(step, score)
        if decision.stop and not last:
            self.ended_early = True
        self.on_validation(step, score)
        return decision

    def finish_validation(self, last: int, finished: Callable[[int], Optional[dict]],
                          elapsed: float) -> None:
        """Training is over after ``last`` steps: validate the last parameters (unless
        the last pause did); with early stopping, keep them as the best if they are, or
        have the servers restore the best, before the test rows are scored."""
        st = self.stopping
        if st.last_step != last:
            self.validate(last, last=True)
        if self.cfg.early_stop == 0:
            return
        if st.best_step == last:
            send_ints(self.roles.world, Reply(WRITE, last, best=True).encode(), self.servers,
                      TAG_REPLY)
            entries = self._await_servers("wrote")
            workers = tuple(finished(w) for w in range(self.roles.n_workers))
            self._publish(Publish(last, True, tuple(entries), workers, keep=False,
                                  best=True), elapsed)
        elif st.best_step >= 0:
            send_ints(self.roles.world, Reply(RESTORE, st.best_step).encode(), self.servers,
                      TAG_REPLY)
            self._await_servers("restored")
            if self.verbose:
                print(f"[mpips] restored the best parameters (step {st.best_step}, "
                      f"validation AUC {st.best_auc:.4f}) from {self.cfg.run_dir / BEST}",
                      flush=True)
        send_ints(self.roles.world, Reply(END).encode(), self.servers, TAG_REPLY)

    def _await_servers(self, kind: str) -> list[dict]:
        """Every server's record of ``kind`` (after training: nothing else is sent)."""
        got: dict[int, dict] = {}
        while len(got) < self.roles.n_servers:
            source, tag, buf = idle_poll(lambda: poll_any(self.roles.world))
            doc = doc_of(buf)
            if tag != TAG_RECORD or doc.get("kind") != kind:
                raise ProtocolError(f"rank {source} sent {doc!r} where a {kind!r} record "
                                    f"was due")
            got[self.roles.world_server(source)] = doc
        return [got[s] for s in range(self.roles.n_servers)]

    def validation_summary(self) -> dict:
        """The final record's part: the best validation AUC and its step, whether
        training stopped early, every validation."""
        st = self.stopping
        if st is None:
            return {}
        return {"val_auc": st.best_auc, "best_step": st.best_step,
                "stopped_early": self.ended_early,
                "validations": [[s, a] for s, a in st.history]}

    def _verdict(self, v: Verdict, servers: list[int]) -> None:
        """End the pause: reset the board's request, tell everyone, follow the moves."""
        self.board.clear()
        reply = Reply(GO, v.label, v.stop, v.placement.epoch, v.moves, early=v.early).encode()
        workers = [self.roles.worker_ctl_rank(w) for w in v.workers]
        send_ints(self.roles.world, reply, servers, TAG_REPLY)
        parked = [self.roles.worker_ctl_rank(w) for w in v.parked]
        send_ints(self.roles.ctl, reply, workers + (parked if v.moves else []), TAG_REPLY)
        if v.stop:
            self.stopped = True
            send_ints(self.roles.ctl, Reply(END).encode(), parked, TAG_REPLY)
        began, self._pause_began = self._pause_began, None
        self.after_pause(v.placement)
        if v.moves is None:
            return
        if "join" in v.moves.reason.split(","):
            self.move_log.joined += 1
        self._moving = {"partitions": len(v.moves), "rows": v.moved_rows, "bytes": 0,
                        "seconds": 0.0, "reports": 0, "epoch": v.placement.epoch,
                        "reason": v.moves.reason, "began": began}

    def _moved(self, server: int, doc: dict) -> None:
        m = self._moving
        if doc["epoch"] != m["epoch"]:
            raise ProtocolError(f"server {server} moved to epoch {doc['epoch']}, "
                                f"expected {m['epoch']}")
        m["bytes"] += doc["bytes"]
        m["seconds"] = max(m["seconds"], doc["seconds"])
        m["reports"] += 1
        if m["reports"] == self.roles.n_servers:
            m["pause_seconds"] = time.perf_counter() - m.pop("began")
            if self.verbose:
                print(f"[mpips] moved {m['partitions']:,} partitions ({m['reason']}), "
                      f"{m['rows']:,} rows, {m['bytes'] / 2**20:,.1f} MiB in "
                      f"{m['seconds']:.3f}s; placement epoch {m['epoch']}", flush=True)
            self.move_log.moves.append({k: v for k, v in m.items() if k != "reports"})
            self._moving = None

    def end(self) -> None:
        """Training is over: every worker that finished may leave its parked wait."""
        send_ints(self.roles.ctl, Reply(END).encode(),
                  [self.roles.worker_ctl_rank(w) for w in range(self.roles.n_workers)],
                  TAG_REPLY)


def pause_schedule(cfg: TrainConfig, validations: EvalSchedule = EvalSchedule()
                   ) -> PauseSchedule:
    """The steps every worker of this job pauses before, known in advance."""
    return PauseSchedule(cfg.checkpoint_every if cfg.checkpointing else 0, cfg.move_every,
                         frozenset(cfg.scheduled_steps()), validations)
