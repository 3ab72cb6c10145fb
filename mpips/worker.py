"""The worker role: read its share of the rows, pull, compute gradients, push, evaluate."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .balance import Pool, merge_factor, next_batch
from .board import REQUESTED, ClockBoard
from .client import TableClient
from .clocks import DONE, may_start
from .config import TrainConfig
from .data import Batch, Source, batch_of, share
from .data.schedule import Rows, Schedule
from .data.plan import DataPlan, eval_batch_rows
from .models import Lookup, Model
from .pause import pause_schedule, worker_pause
from .killing import KillSwitch
from .pausing import pause_lead
from .validation import eval_schedule
from .push import PushHandle
from .load import PartitionMeter
from .reports import Evaluation, send_partition_load, send_progress
from .rowcache import RowCache
from .ring import Route
from .recovery import Held
from .topology import WORKER, Roles
from .waiting import idle_wait


@dataclass
class Work:
    """One step's work: the epoch it belongs to, its batch (None: an empty step), its row
    ranges (kept by balanced workers, whose untrained rows a checkpoint records), and
    whether it is the worker's last step."""

    epoch: int
    batch: Batch | None
    rows: tuple[Rows, ...] = ()
    last: bool = False


@dataclass
class Prepared:
    """A batch ready for its step: unique keys per table and their routes to the servers."""

    batch: Batch | None
    lookups: dict[str, Lookup]
    routes: dict[str, Route]


class Worker:
    """One worker's training and evaluation over its share of the data."""

    def __init__(self, cfg: TrainConfig, roles: Roles, client: TableClient, model: Model,
                 data: DataPlan, bound: int | None, board: ClockBoard, ssp: bool = False,
                 resumed: dict | None = None, balanced: bool = False,
                 requests: bool = False) -> None:
        """``board`` carries requested pauses (read when ``requests``: the job may ask for
        checkpoints or moves) and, with ``ssp``, the clocks; with ``balanced``, the batch
        counters and speeds of ``balance``. ``resumed`` is this worker's entry in the
        manifest of the checkpoint resumed. Every worker counts what each partition gives
        it (sampled) and reports it: the partitions' load in the job's records, which the
        rebalancer, when there is one, decides by."""
        self.cfg, self.roles, self.client, self.model, self.data = cfg, roles, client, model, data
        self.plan = Schedule.of(cfg, data.train_range, roles.index, roles.n_workers) \
            .resumed(resumed)
        # The step's gradient is the mean over the global batch (all workers' batches).
        self.scale = 1.0 / (cfg.batch_size * roles.n_workers)
        # Shares that fit in memory are read (or generated) once, before the clock starts,
        # into memory that every worker of the node can read.
        self.cache = RowCache(roles.group, data.train,
                              [share(*data.train_range, w, roles.n_workers)
                               for w in range(roles.n_workers)], cfg.batch_size)
        self._last_report = 0.0
        self.bound = bound                     # SSP: steps ahead of the slowest allowed
        slow = cfg.slow()
        self.slow_factor = slow[1] if slow is not None and slow[0] == roles.index else 1.0
        self._owed = 0.0                       # seconds the slow worker has still to sleep
        self.jitter = np.random.default_rng([cfg.seed, roles.index, 7])
        self.board, self.ssp = board, ssp
        self.lead = pause_lead(bound)
        self.pauses = pause_schedule(cfg, eval_schedule(cfg, data.train_range,
                                                        roles.n_workers))
        self.requests = requests
        self.kill = KillSwitch.of(cfg.kill(), roles.world_rank)
        self.meter = PartitionMeter(client.placement.pmap.partitions)
        self.start, self.samples, self.loss, self.finished = 0, 0, 0.0, False
        if resumed is not None:
            self.start, self.finished = int(resumed["step"]), bool(resumed["finished"])
            self.samples, self.loss = int(resumed["samples"]), float(resumed["loss"])
            if resumed.get("rng"):
                self.jitter.bit_generator.state = resumed["rng"]
        self.step = self.start         # the step under way (for a recovery's report)
        # Steps acknowledged, with the samples and loss counted then; the samples and
        # loss of the push out (not acknowledged): where a recovery may go on from.
        self.acked = (self.start, self.samples, self.loss)
        self.out: tuple[int, float] | None = None
        # The work of each step not yet acknowledged, and the step of the last work once
        # taken: the rows a balanced worker holds, for a recovery that keeps the rows.
        self._unsettled: list[tuple[int, Work]] = []
        self._end: int | None = None
        self.pool: Pool | None = None
        if balanced:
            self._balanced_state(resumed)
        elif not self.finished:
            self.planned = self.samples + self.plan.rows_left(self.start)
        else:
            self.planned = self.samples

    def _balanced_state(self, resumed: dict | None) -> None:
        """Balanced work: the pool of every owner's batches, this worker's counter as the
        checkpoint left it, and the rows it had taken but not trained (done first)."""
        me = self.roles.index
        self.pool = Pool.of(self.cfg, self.data.train_range, self.roles.n_workers)
        self._ends = self.pool.ends()
        self._own_left = True
        self._speed = 0.0                      # moving average of rows per second
        self._taken: list[tuple[int, Rows]] = []
        position = 0
        if resumed is not None:
            position = int(resumed.get("pool", 0))
            self.board.set_counter(me, position)
            self._taken = [(int(resumed["epoch"]), (int(lo), int(hi)))
                           for lo, hi in resumed.get("carry", [])]
        carried = sum(hi - lo for _, (lo, hi) in self._taken)
        self.planned = self.samples + carried + self.pool.rows_left(me, position)

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """This worker's training batches for ``epoch`` (seeded order with ``--shuffle``,
        else row order), from the ``skip``-th on."""
        order = self.plan.order(epoch)
        if self.cache.kept:
            return (self.cache.batch(self.roles.index, int(b)) for b in order[skip:])
        return self.data.train.batches(*self.plan.rows, self.cfg.batch_size,
                                       order=order[skip:])

    def pull(self, lookups: dict[str, Lookup]) -> None:
        """Fill each lookup's rows from the servers (for the evaluation: not counted in the
        training's traffic)."""
        for n, lk in lookups.items():
            self.client.pull(n, self.client.route(n, lk.keys), lk.rows, count=False)

    def prepare(self, batch: Batch | None) -> Prepared:
        """Deduplicate and route a batch's keys: no communication, so it can run while the
        servers apply the previous step. No batch (an empty share) gives empty lookups."""
        if batch is None:
            lookups = {t.name: Lookup(np.empty(0, np.int64), np.empty(0, np.int64),
                                      np.empty((0, t.dim), np.float32))
                       for t in self.model.tables}
        else:
            lookups = self.model.lookups(batch)
        return Prepared(batch, lookups,
                        {n: self.client.route(n, lk.keys) for n, lk in lookups.items()})

    def compute(self, prep: Prepared) -> tuple[dict[str, np.ndarray], float]:
        """Pull a prepared batch's rows (the client first reads the servers' versions,
        which the push returns) and compute its gradients: (gradient rows per table,
        summed loss). A batch routed before a change of placement is routed again."""
        if any(r.epoch != self.client.placement.epoch for r in prep.routes.values()):
            prep.routes = {n: self.client.route(n, lk.keys) for n, lk in prep.lookups.items()}
        self.meter.count(self.client.placement.layouts, self.client.dims,
                         [prep.lookups[n].keys for n in self.client.names])
        self.client.read_versions()
        for n, lk in prep.lookups.items():
            self.client.pull(n, prep.routes[n], lk.rows, lk.keys)
        if prep.batch is None:
            return {n: lk.rows for n, lk in prep.lookups.items()}, 0.0
        return self.model.gradients(prep.batch, prep.lookups, self.scale)

    def push(self, step: int, prep: Prepared, grads: dict[str, np.ndarray],
             last: bool) -> PushHandle:
        """Send a step's gradient rows, and its sightings of keys not admitted, to their
        servers; the handle waits for the acks."""
        return self.client.push(step, last, {n: (prep.routes[n], grads[n])
                                             for n in prep.lookups},
                                {n: lk.keys for n, lk in prep.lookups.items()},
                                {n: lk.seen for n, lk in prep.lookups.items()
                                 if lk.seen is not None})

    def pace(self, step_s: float) -> None:
        """Test aids: the slow worker sleeps (FACTOR - 1) times its step's own time (pull,
        gradients, push and acks, not waits for the SSP bound), and every worker up to
        ``--delay-jitter`` seconds at random. Time overslept (a woken rank may wait for a
        core when ranks outnumber cores) is slept less later, so that the slow worker is
        FACTOR times slower on average, not more."""
        if self.slow_factor > 1:
            self._owed += (self.slow_factor - 1) * step_s
            if self._owed > 0:
                began = time.perf_counter()
                time.sleep(self._owed)
                self._owed -= time.perf_counter() - began
        if self.cfg.delay_jitter > 0:
            time.sleep(self.jitter.uniform(0, self.cfg.delay_jitter))

    def report(self, epoch: int, steps: int, finished: bool, now: bool = False) -> None:
        """Tell the scheduler how far this worker is (at most every half progress interval,
        unless ``now``), and what the partitions gave it (every ``LOAD_SECONDS``)."""
        if finished or self.meter.due():
            send_partition_load(self.roles.ctl, self.client.outbox, self.meter.take())
        t = time.perf_counter()
        if not (finished or now) and t - self._last_report < self.cfg.progress_seconds / 2:
            return
        self._last_report = t
        send_progress(self.roles.ctl, epoch, self.samples, self.loss, self.planned, finished,
                      steps, self.client.traffic.progress())

    def stop_label(self, step: int) -> int | None:
        """The pause to stop for before ``step``, if any (``PauseSchedule.stops_at``).
        The first worker to see a request names the step where every worker can stop. A
        job that never asks for pauses does not read the control word."""
        if not (self.requests or self.pauses.any):
            return None
        word = self.board.control() if self.requests else 0
        if word == REQUESTED:
            # A worker never stops at its start, so the earliest stop is the step after.
            word = self.board.name(max(step + self.lead, self.start + 1))
        if not self.pauses.stops_at(step, self.start, word):
            return None
        return word if 0 < word <= step else step

    def record(self, step: int, work: Work, label: int) -> dict:
        """This worker's entry in a checkpoint's manifest: where to resume. A balanced
        worker records the rows it has taken but not trained (``carry``); the scheduler
        adds its counter (``pool``). A job that writes checkpoints gets the worker's
        residuals (error feedback) written for the pause ``label`` (``residuals``)."""
        saved = self.client.save_residuals(self.cfg.run_dir, label) \
            if self.cfg.checkpointing else None
        if self.pool is None:
            where = self.plan.entry()
        else:
            where = {"carry": [list(r) for r in (*work.rows, *(r for _, r in self._taken))]}
        if saved is not None:
            where["residuals"] = saved
        return {"index": self.roles.index, "step": step, "finished": False,
                "epoch": work.epoch, "samples": self.samples, "loss": self.loss,
                "rng": self.jitter.bit_generator.state, **where}

    def _took(self, step: int, work: Work) -> Work:
        """``work`` is that of ``step``: held until its push is acknowledged."""
        self._unsettled.append((step, work))
        if work.last:
            self._end = step
        return work

    def _acknowledged(self, step: int) -> None:
        """Every push before ``step`` is acknowledged: a recovery may go on from there
        with the samples and loss counted now, and no push is out."""
        self.acked, self.out = (step, self.samples, self.loss), None
        self._unsettled = [(s, w) for s, w in self._unsettled if s >= step]

    def _trained_all(self, done: int) -> bool:
        """Do ``done`` acknowledged steps end this worker's training?"""
        if self.pool is None:
            return done >= self.plan.end
        return self._end is not None and done > self._end

    def held(self) -> Held:
        """Where this worker stands if ranks die (``recovery.kept_steps``)."""
        done = self.acked[0]
        return Held(WORKER, done, self.out is not None,
                    self.finished or self._trained_all(done), self.roles.index)

    def entry_at(self, step: int) -> dict:
        """This worker's checkpoint entry at ``step``, where the survivors of a failure
        go on from (``kept_steps``): its acknowledged steps, or one more (or its end)
        when its push out was applied (then its samples and loss count). A balanced
        worker carries the rows of its steps from there on, taken but not applied, and
        those it took before (the scheduler adds its counter, ``pool``)."""
        done, samples, loss = self.acked
        if step > done and self.out is not None:
            samples, loss = samples + self.out[0], loss + self.out[1]
        if self.pool is None:
            at = min(step, self.plan.end)
            where = {"finished": at == self.plan.end, "epoch": self.plan.remaining(at)[0],
                     **self.plan.entry()}
        else:
            at = min(step, done + (self.out is not None))
            held = [w for s, w in self._unsettled if s >= at]
            where = {"finished": self.finished or self._trained_all(at),
                     "epoch": held[0].epoch if held else self.cfg.epochs,
                     "carry": [list(r) for r in (*(r for w in held for r in w.rows),
                                                 *(r for _, r in self._taken))]}
        return {"index": self.roles.index, "step": at, "samples": samples, "loss": loss,
                "rng": self.jitter.bit_generator.state, **where}

    def warm_up(self) -> None:
        """Compile or load the numba kernels before the clock starts (no communication)."""
        self.client.warm_up()
        batch = next(self.epoch_batches(0), None) if not self.finished else None
        if batch is not None:
            lookups = self.model.lookups(batch)
            for lk in lookups.values():
                lk.rows[:] = 0.0
            self.model.gradients(batch, lookups, self.scale)
            self.model.predict(batch, lookups)

    def schedule(self) -> Iterator[Work]:
        """Every step's work from ``start``: the carried batches, then the worker's own
        epochs; a worker with no rows at all still takes one empty step so that the
        servers hear its last push."""
        plan = self.plan
        last = max(plan.end, plan.base + 1) - 1
        if plan.end == plan.base:
            yield Work(0, None, last=True)
            return
        step = self.start
        for rows in plan.carry[self.start - plan.base:]:
            yield Work(plan.first_epoch - 1, self.rows_batch(rows), last=step == last)
            step += 1
        first, skip = plan.position(max(self.start, plan.base + len(plan.carry)))
        for epoch in range(plan.first_epoch + first, self.cfg.epochs):
            for batch in self.epoch_batches(epoch, skip if epoch == plan.first_epoch + first
                                            else 0):
                yield Work(epoch, batch, last=step == last)
                step += 1

    def balanced(self) -> Iterator[Work]:
        """Every step's work of a balanced worker (``balance``): the rows it had taken
        when the job resumed, then batches taken from the pool, ``merge()`` of them a
        step; then one empty last step."""
        while True:
            units: list[tuple[int, Rows]] = []
            want = self.merge()
            while len(units) < want and (self._taken or (got := self.take()) is not None):
                units.append(self._taken.pop(0) if self._taken else got)
            if not units:
                break
            batch = Batch.concat([self.rows_batch(rows) for _, rows in units])
            yield Work(units[0][0], batch, tuple(rows for _, rows in units))
        yield Work(self.cfg.epochs, None, last=True)

    def rows_batch(self, rows: Rows) -> Batch:
        """Training rows ``rows`` as one batch. Rows that are a whole batch of a worker's
        share come from the node's row cache, else as that share's batch from the source
        (which finds a share's batches in a file once); other rows are read alone."""
        shares = self.cache.shares
        found = batch_of(shares, rows, self.cfg.batch_size)
        if found is None:
            return next(self.data.train.batches(*rows, rows[1] - rows[0]))
        owner, b = found
        batch = self.cache.batch(owner, b)
        return batch if batch is not None else next(self.data.train.batches(
            *shares[owner], self.cfg.batch_size, order=[b]))

    def take(self) -> tuple[int, Rows] | None:
        """The next batch from the pool (``next_batch``): its epoch and rows; None once
        every owner's batches are taken."""
        me = self.roles.index
        got = next_batch(self.board.take, self.board.counters, self._ends, me, self._own_left)
        if got is None:
            return None
        self._own_left = got[0] == me
        return self.pool.unit(*got)

    def merge(self) -> int:
        """How many batches this worker takes in its next step: its speed against the
        slowest worker's (``merge_factor``). A worker runs out of batches only once the
        pool is empty, so a finished worker's last speed holds nobody back."""
        if self._speed <= 0:
            return 1
        speeds = self.board.speeds()
        speeds[self.roles.index] = int(self._speed)
        return merge_factor(self._speed, speeds.astype(np.float64))

    def measure(self, work: Work, seconds: float) -> None:
        """Publish how fast this worker trains: a moving average of its steps' rows per
        second, pacing included (not waits for the SSP bound)."""
        if work.batch is None or len(work.batch) == 0 or seconds <= 0:
            return
        speed = len(work.batch) / seconds
        self._speed = speed if self._speed <= 0 else 0.7 * self._speed + 0.3 * speed
        self.board.set_speed(self.roles.index, int(self._speed))

    def train(self) -> bool:
        """All epochs of steps from ``start``; returns True if the job stopped at a
        checkpoint before the end.

        A step pulls, computes and pushes, and prepares the next batch while the servers
        apply the push. Under BSP and SSP it then waits for the servers' acks, so every
        pull sees the worker's own previous update: in BSP the acks come when the whole
        round is applied, in SSP as soon as this push is; SSP then publishes the worker's
        completed steps on ``board`` and, before the next step, waits there until no other
        worker is more than the bound behind. Under ASP the worker waits for nothing but
        its previous push, just before sending the next one (one push in flight).
        Before a step the worker may pause for a checkpoint or a move (``stop_label``).
        """
        clocks = self.board if self.ssp else None
        if self.finished:
            if clocks is not None:
                clocks.set(self.roles.index, DONE)
            self.report(self.cfg.epochs, self.start, True)
            return False
        if clocks is not None:
            clocks.set(self.roles.index, self.start)
        steps = self.balanced() if self.pool is not None else self.schedule()
        current = self._took(self.start, next(steps))
        self.report(current.epoch, self.start, False, now=True)
        prep = self.prepare(current.batch)
        in_flight: PushHandle | None = None
        step = self.start
        while True:
            self.step = step
            self.kill.reached(step)
            work = current
            if clocks is not None:
                idle_wait(lambda: may_start(clocks.read(), self.roles.index, step, self.bound))
            label = self.stop_label(step)
            if label is not None:
                if in_flight is not None:
                    in_flight.wait()
                    in_flight = None
                    self._acknowledged(step)
                reply = worker_pause(self.roles, self.client, label,
                                     self.record(step, work, label),
                                     self.validate if self.cfg.validating else None)
                if reply.stop:
                    return True
                if reply.early:              # early stopping: training is over
                    if clocks is not None:
                        clocks.set(self.roles.index, DONE)
                    break
            started = time.perf_counter()
            grads, batch_loss = self.compute(prep)
            if in_flight is not None:
                in_flight.wait()
                self._acknowledged(step)
            in_flight = self.push(step, prep, grads, last=work.last)
            self.out = (len(work.batch) if work.batch is not None else 0, batch_loss)
            if not work.last:                # overlap the next batch with the servers' update
                current = self._took(step + 1, next(steps))
                prep = self.prepare(current.batch)
            if self.bound is not None:       # BSP and SSP: read your own writes
                in_flight.wait()
                in_flight = None
                if clocks is not None:
                    clocks.set(self.roles.index, DONE if work.last else step + 1)
            self.pace(time.perf_counter() - started)
            if self.pool is not None:
                self.measure(work, time.perf_counter() - started)
            self.loss += batch_loss
            self.samples += len(work.batch) if work.batch is not None else 0
            step += 1
            if in_flight is None:            # acknowledged (BSP and SSP)
                self._acknowledged(step)
            if work.last:
                break
            self.report(work.epoch, step, False)
        if in_flight is not None:
            in_flight.wait()
            self._acknowledged(step)
        self.report(self.cfg.epochs, step, True)
        return False

    def evaluate(self) -> Evaluation:
        """Predict this worker's share of the test rows with the final parameters."""
        return self.score(self.data.test, self.data.test_range)

    def validate(self) -> Evaluation:
        """Predict this worker's share of the validation rows with the parameters now."""
        return self.score(self.data.val, self.data.val_range)

    def score(self, source: Source, rows_range: tuple[int, int]) -> Evaluation:
        """Predict this worker's share of ``rows_range`` of ``source``."""
        rows = share(*rows_range, self.roles.index, self.roles.n_workers)
        probs, labels, true_p = [], [], []
        for batch in source.batches(*rows, eval_batch_rows(self.cfg.batch_size)):
            lookups = self.model.lookups(batch)
            self.pull(lookups)
            probs.append(self.model.predict(batch, lookups))
            labels.append(batch.labels.astype(np.float64))
            if batch.true_p is not None:
                true_p.append(batch.true_p)
        cat = lambda xs: np.concatenate(xs) if xs else np.empty(0)  # noqa: E731
        return Evaluation(cat(probs), cat(labels), cat(true_p))

