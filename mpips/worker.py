"""The worker role: read its share of the rows, pull, compute gradients, push, evaluate."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .board import ClockBoard
from .checkpoint.protocol import worker_checkpoint
from .clocks import DONE, REQUESTED, checkpoint_lead, may_start, stops_at
from .config import TrainConfig
from .data import Batch, share
from .data.schedule import Schedule
from .data.plan import DataPlan
from .models import Lookup, Model
from .reports import Evaluation, send_progress
from .ring import Route
from .tables import FLAG_LAST, PushHandle, Tables
from .topology import Roles
from .waiting import idle_wait

CACHE_BYTES = 1 << 30       # largest share of training rows a worker keeps in memory
BYTES_PER_FEATURE = 12      # an int64 key and a float32 value


@dataclass
class Prepared:
    """A batch ready for its step: unique keys per table and their routes to the servers."""

    batch: Batch | None
    lookups: dict[str, Lookup]
    routes: dict[str, Route]


class Worker:
    """One worker's training and evaluation over its share of the data."""

    def __init__(self, cfg: TrainConfig, roles: Roles, tables: Tables, model: Model,
                 data: DataPlan, bound: int | None, board: ClockBoard, ssp: bool = False,
                 resumed: dict | None = None) -> None:
        """``board`` carries checkpoint requests (and, with ``ssp``, the clocks);
        ``resumed`` is this worker's entry in the manifest of the checkpoint resumed."""
        self.cfg, self.roles, self.tables, self.model, self.data = cfg, roles, tables, model, data
        self.plan = Schedule.of(cfg, data.train_range, roles.index, roles.n_workers) \
            .resumed(resumed)
        # The step's gradient is the mean over the global batch (all workers' batches).
        self.scale = 1.0 / (cfg.batch_size * roles.n_workers)
        # A share that fits in memory is read (or generated) once, before the clock starts.
        rows = self.plan.rows
        share_bytes = (rows[1] - rows[0]) * data.train.fields * BYTES_PER_FEATURE
        self._cache: list[Batch] | None = None
        if share_bytes <= CACHE_BYTES:
            self._cache = list(data.train.batches(*rows, cfg.batch_size))
        self._last_report = 0.0
        self.bound = bound                     # SSP: steps ahead of the slowest allowed
        slow = cfg.slow()
        self.slow_factor = slow[1] if slow is not None and slow[0] == roles.index else 1.0
        self.jitter = np.random.default_rng([cfg.seed, roles.index, 7])
        self.board, self.ssp = board, ssp
        self.lead = checkpoint_lead(bound)
        self.start, self.samples, self.loss, self.finished = 0, 0, 0.0, False
        if resumed is not None:
            self.start, self.finished = int(resumed["step"]), bool(resumed["finished"])
            self.samples, self.loss = int(resumed["samples"]), float(resumed["loss"])
            if resumed.get("rng"):
                self.jitter.bit_generator.state = resumed["rng"]
        self.planned = self.samples + (0 if self.finished else self.plan.rows_left(self.start))

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """This worker's training batches for ``epoch`` (seeded order with ``--shuffle``,
        else row order), from the ``skip``-th on."""
        order = self.plan.order(epoch)
        if self._cache is not None:
            return (self._cache[b] for b in order[skip:])
        return self.data.train.batches(*self.plan.rows, self.cfg.batch_size,
                                       order=order[skip:])

    def pull(self, lookups: dict[str, Lookup]) -> dict[str, Route]:
        """Fill each lookup's rows from the servers; returns the routes for the push."""
        routes = {n: self.tables.route(n, lk.keys) for n, lk in lookups.items()}
        for n, lk in lookups.items():
            self.tables.pull(n, routes[n], lk.rows)
        return routes

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
                        {n: self.tables.route(n, lk.keys) for n, lk in lookups.items()})

    def compute(self, prep: Prepared) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
        """Pull a prepared batch's rows and compute its gradients: (gradient rows per
        table, the server versions read before the pull, summed loss)."""
        versions = self.tables.read_versions()
        for n, lk in prep.lookups.items():
            self.tables.pull(n, prep.routes[n], lk.rows)
        if prep.batch is None:
            return {n: lk.rows for n, lk in prep.lookups.items()}, versions, 0.0
        grads, loss = self.model.gradients(prep.batch, prep.lookups, self.scale)
        return grads, versions, loss

    def push(self, step: int, prep: Prepared, grads: dict[str, np.ndarray],
             versions: np.ndarray, last: bool) -> PushHandle:
        """Send a step's gradient rows to their servers; the handle waits for the acks."""
        return self.tables.push(step, FLAG_LAST if last else 0,
                                {n: (prep.routes[n], grads[n]) for n in prep.lookups},
                                versions)

    def pace(self, step_s: float) -> None:
        """Test aids: the slow worker sleeps (FACTOR - 1) times its step's own time (pull,
        gradients, push and acks, not waits for the SSP bound), and every worker up to
        ``--delay-jitter`` seconds at random."""
        if self.slow_factor > 1:
            time.sleep((self.slow_factor - 1) * step_s)
        if self.cfg.delay_jitter > 0:
            time.sleep(self.jitter.uniform(0, self.cfg.delay_jitter))

    def report(self, epoch: int, steps: int, finished: bool, now: bool = False) -> None:
        """Tell the scheduler how far this worker is (at most every half progress interval,
        unless ``now``)."""
        t = time.perf_counter()
        if not (finished or now) and t - self._last_report < self.cfg.progress_seconds / 2:
            return
        self._last_report = t
        send_progress(self.roles.ctl, epoch, self.samples, self.loss, self.planned, finished,
                      steps)

    def stop_label(self, step: int) -> int | None:
        """The checkpoint to stop for before ``step``, if any (see ``clocks.stops_at``).
        The first worker to see a request names the step where every worker can stop. A
        job that writes no checkpoints never stops (nor reads the control word)."""
        if not self.cfg.checkpointing:
            return None
        word = self.board.control()
        if word == REQUESTED:
            old = self.board.swap(REQUESTED, step + self.lead)
            word = step + self.lead if old == REQUESTED else old
        if not stops_at(step, self.start, self.cfg.checkpoint_every, word):
            return None
        return word if 0 < word <= step else step

    def record(self, step: int, epoch: int) -> dict:
        """This worker's entry in a checkpoint's manifest: where to resume."""
        return {"index": self.roles.index, "step": step, "finished": False, "epoch": epoch,
                "samples": self.samples, "loss": self.loss,
                "rng": self.jitter.bit_generator.state, **self.plan.entry()}

    def warm_up(self) -> None:
        """Compile or load the numba kernels before the clock starts (no communication)."""
        batch = next(self.epoch_batches(0), None) if not self.finished else None
        if batch is not None:
            lookups = self.model.lookups(batch)
            for lk in lookups.values():
                lk.rows[:] = 0.0
            self.model.gradients(batch, lookups, self.scale)
            self.model.predict(batch, lookups)

    def schedule(self) -> Iterator[tuple[int, Batch | None]]:
        """(epoch, batch) for every step from ``start``: the carried batches, then the
        worker's own epochs; a worker with no rows at all still takes one empty step so
        that the servers hear its last push."""
        plan, size = self.plan, self.cfg.batch_size
        if plan.end == plan.base:
            yield 0, None
            return
        for lo, hi in plan.carry[self.start - plan.base:]:
            yield plan.first_epoch - 1, next(self.data.train.batches(lo, hi, size))
        first, skip = plan.position(max(self.start, plan.base + len(plan.carry)))
        for epoch in range(plan.first_epoch + first, self.cfg.epochs):
            for batch in self.epoch_batches(epoch, skip if epoch == plan.first_epoch + first
                                            else 0):
                yield epoch, batch

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
        Before a step the worker may stop for a checkpoint (``stop_label``).
        """
        clocks = self.board if self.ssp else None
        last_step = max(self.plan.end, self.plan.base + 1) - 1
        if self.finished:
            if clocks is not None:
                clocks.set(self.roles.index, DONE)
            self.report(self.cfg.epochs, self.start, True)
            return False
        if clocks is not None:
            clocks.set(self.roles.index, self.start)
        self.report(self.plan.remaining(self.start)[0], self.start, False, now=True)
        steps = self.schedule()
        current = next(steps)
        prep = self.prepare(current[1])
        in_flight: PushHandle | None = None
        for step in range(self.start, last_step + 1):
            epoch, batch = current
            if clocks is not None:
                idle_wait(lambda: may_start(clocks.read(), self.roles.index, step, self.bound))
            label = self.stop_label(step)
            if label is not None:
                if in_flight is not None:
                    in_flight.wait()
                    in_flight = None
                if worker_checkpoint(self.roles, self.tables, label, self.record(step, epoch)):
                    return True
            started = time.perf_counter()
            grads, versions, batch_loss = self.compute(prep)
            if in_flight is not None:
                in_flight.wait()
            in_flight = self.push(step, prep, grads, versions, last=step == last_step)
            if step < last_step:             # overlap the next batch with the servers' update
                current = next(steps)
                prep = self.prepare(current[1])
            if self.bound is not None:       # BSP and SSP: read your own writes
                in_flight.wait()
                in_flight = None
                if clocks is not None:
                    clocks.set(self.roles.index, DONE if step == last_step else step + 1)
            self.pace(time.perf_counter() - started)
            self.loss += batch_loss
            self.samples += len(batch) if batch is not None else 0
            self.report(epoch, step + 1, False)
        if in_flight is not None:
            in_flight.wait()
        self.report(self.cfg.epochs, last_step + 1, True)
        return False

    def evaluate(self) -> Evaluation:
        """Predict this worker's share of the test rows with the final parameters."""
        rows = share(*self.data.test_range, self.roles.index, self.roles.n_workers)
        probs, labels, true_p = [], [], []
        for batch in self.data.test.batches(*rows, max(self.cfg.batch_size, 8192)):
            lookups = self.model.lookups(batch)
            self.pull(lookups)
            probs.append(self.model.predict(batch, lookups))
            labels.append(batch.labels.astype(np.float64))
            if batch.true_p is not None:
                true_p.append(batch.true_p)
        cat = lambda xs: np.concatenate(xs) if xs else np.empty(0)  # noqa: E731
        return Evaluation(cat(probs), cat(labels), cat(true_p))

    def pull_all(self) -> dict[str, np.ndarray]:
        """Every row of every table, pulled one-sidedly (for tests and inspection)."""
        out = {}
        for spec in self.model.tables:
            lk = Lookup(np.arange(spec.rows, dtype=np.int64), np.empty(0, np.int64),
                        np.empty((spec.rows, spec.dim), np.float32))
            self.pull({spec.name: lk})
            out[spec.name] = lk.rows
        return out
