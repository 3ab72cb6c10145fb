"""The server role: a thin loop that feeds each message to ``serving.ServerMachine`` and
carries out its actions on the ``ShardStore``: apply, acknowledge, pause, finish."""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .checkpoint.saving import kept_arrays
from .clocks import StalenessLog, Start, SyncPolicy
from .killing import KillSwitch
from .load import BusyMeter
from .message import PushMessage
from .pause import server_final, server_pause
from .recovery import Held, Standing
from .reports import send_server_load
from .serving import Ack, Apply, Finish, Pause, ServerMachine
from .store import ShardStore
from .topology import SERVER
from .waiting import idle_poll


@dataclass
class ServerReport:
    """What a server saw: pushes applied, SSP-bound violations, staleness per table, and
    its memory: peak resident bytes against the raw bytes of its rows and state."""

    applied: int
    violations: int
    staleness: StalenessLog
    peak_rss: int = 0
    table_bytes: int = 0
    stopped: bool = False        # at a checkpoint, before the end (a stop signal)


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux ``VmHWM``, else getrusage)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Slowness:
    """The ``--slow-server`` test aid: before each acknowledgement, sleep ``factor - 1``
    times the time this server worked since the last one (receiving, applying and
    acknowledging), so it serves ``factor`` times slower in everything it does. Time
    overslept (a woken rank may wait for a core) is slept less later."""

    def __init__(self, factor: float) -> None:
        self.factor, self._worked, self._owed = factor, 0.0, 0.0

    def work(self, seconds: float) -> None:
        self._worked += seconds

    def pay(self) -> float:
        """Sleep what the work since the last call owes; returns the seconds slept."""
        if self.factor <= 1:
            return 0.0
        self._owed += (self.factor - 1) * self._worked
        self._worked = 0.0
        if self._owed <= 0:
            return 0.0
        began = time.perf_counter()
        time.sleep(self._owed)
        slept = time.perf_counter() - began
        self._owed -= slept
        return slept


def serve(store: ShardStore, machine: ServerMachine, log: StalenessLog,
          run_dir: Optional[Path], slow: Slowness, meter: BusyMeter, report: bool,
          kill: KillSwitch) -> bool:
    """Serve until every worker has sent its last push or the job stops at a pause
    (returns True then). The time spent receiving, applying and acknowledging (and the
    slow-server aid's sleep, which stands for a slower machine) goes to ``meter``, which
    reports to the scheduler when ``report``. ``kill``: the ``--kill-at`` aid, by steps
    applied."""
    world = store.roles.world

    def worked(began: float, rows: int = 0, steps: int = 0) -> None:
        spent = time.perf_counter() - began
        meter.add(spent, rows, steps)
        slow.work(spent)

    def poll() -> Optional[PushMessage]:
        began = time.perf_counter()
        msg = store.poll()
        if msg is not None:
            worked(began)
        if report and meter.due():
            send_server_load(world, meter.report(store.placement.epoch))
        return msg

    actions = machine.begin()
    while True:
        for action in actions:
            began = time.perf_counter()
            if isinstance(action, Apply):
                worked(began, rows=store.apply(action.pushes, action.tables, log,
                                               action.step))
            elif isinstance(action, Ack):
                meter.add(slow.pay())
                began = time.perf_counter()
                store.ack(action.pushes)
                worked(began, steps=1)
                kill.reached(machine.steps)
            elif isinstance(action, Pause):
                reply = server_pause(store.roles, store, log, run_dir, action.label,
                                     action.workers)
                if reply.stop:
                    return True
                if reply.early:          # early stopping: training is over
                    return False
                machine.resume(store.placement.epoch)
                meter.restart()
            elif isinstance(action, Finish):
                return False
        actions = machine.on_message(idle_poll(poll))


def run_server(store: ShardStore, policies: Sequence[SyncPolicy], seed: int = 0,
               start: Optional[Start] = None, log: Optional[StalenessLog] = None,
               run_dir: Optional[Path] = None, slow_factor: float = 1.0,
               report: bool = False, final: bool = True,
               kill: KillSwitch = KillSwitch(), room: int = 0,
               standing: Optional[Standing] = None) -> ServerReport:
    """Serve until every worker has sent its last push (or the job stops at a pause). A
    resumed job passes ``start`` (where its workers stand) and ``log``, with its shards
    already loaded; ``run_dir``: where checkpoints go, one of them when training ends
    (None: the job writes none), ``final``: write that one (False: ``run_dir`` only gets
    the best parameters); ``report``: send the scheduler load reports (a training
    job's scheduler follows them); ``kill``: the ``--kill-at`` aid; ``room``: bytes of
    the windows' spare rows to touch first, where partitions that move here will land
    (``ShardStore.touch_room``; a job that may rebalance); ``standing`` (under ULFM)
    learns the rounds served and how to keep the rows, for a recovery, once the shards
    hold them."""
    if start is None or log is None:
        store.init(seed)
        start, log = Start.fresh(store.roles.n_workers), StalenessLog(store.names)
    store.touch_room(room)
    store.warm_up()
    store.ready()
    machine = ServerMachine(policies, start, store.placement.epoch)
    if standing is not None:
        standing.step = lambda: machine.steps
        standing.held = lambda: Held(SERVER, machine.steps,
                                     at=machine.expected(len(start.steps)))
        standing.part = lambda step: kept_arrays(store, log)
    meter = BusyMeter()
    stopped = serve(store, machine, log, run_dir, Slowness(slow_factor), meter, report, kill)
    if report:
        send_server_load(store.roles.world, meter.final(store.placement.epoch))
    if run_dir is not None and final and not stopped and machine.applied:
        server_final(store.roles, store, log, run_dir, machine.steps)
    return ServerReport(machine.applied, machine.violations, log, peak_rss(),
                        store.table_bytes(), stopped)
