"""The rebalancer on a simulated cluster, without processes: it evens out a slow server,
then stops; its plans respect the byte bound and only move load from busier to idler
servers; a steady load never makes it move partitions back and forth."""
from types import SimpleNamespace

import numpy as np
import pytest

from mpips import bench_balance, bench_sync
from mpips.load import SAMPLE_EVERY, BusyMeter, LoadStats, PartitionMeter, ServerLoad
from mpips.models import TableSpec
from mpips.placement import HEADROOM, Moves, Placement
from mpips.rebalance import JOIN_BUSY, LoadWatch, Rebalancer, partition_bytes
from mpips.ring import TableLayout

SPECS = [TableSpec("emb", 400_000, 9), TableSpec("bias", 1, 1), TableSpec("mlp", 1, 2000)]
MiB = 2**20


class Cluster:
    """Servers whose time per step is a fixed part plus their cost per unit of load (a
    slow server's is higher) times the load of the partitions they hold; as in BSP, the
    slowest sets the step, so a server's busy share is its time over the slowest's."""

    def __init__(self, speed: list[float], seed: int = 0, standby: int = 0,
                 fixed: float = 0.02, utilization: float = 0.9,
                 headroom: float = HEADROOM) -> None:
        self.speed, self.fixed = np.array(speed + [1.0] * standby), fixed
        self.utilization = utilization      # the slowest server's busy share
        self.placement = Placement.start(SPECS, len(self.speed), len(speed), headroom)
        rng = np.random.default_rng(seed)
        self.load = rng.zipf(1.5, self.placement.pmap.partitions).astype(float)
        self.load = np.minimum(self.load, 200.0)
        self.load[rng.choice(self.load.size, 3000, replace=False)] = 0.0   # never touched
        self.scale = 0.6 / (self.load.sum() / len(speed))

    def shares(self) -> np.ndarray:
        """Each server's time per step."""
        held = np.bincount(self.placement.pmap.owner, weights=self.load,
                           minlength=self.speed.size)
        return self.fixed + self.scale * held * self.speed

    def busy(self) -> np.ndarray:
        """Each server's busy share: its time per step over the step (the slowest)."""
        times = self.shares()
        return self.utilization * times / times.max()

    def rebalancer(self, **kw) -> tuple[Rebalancer, LoadStats]:
        stats = LoadStats(self.speed.size, self.placement.pmap.partitions)
        stats.partition_load = self.load.copy()
        args = dict(margin=0.15, window=3, max_bytes=8 * MiB)
        args.update(kw)
        return Rebalancer(stats, partition_bytes(SPECS, 1), **args), stats

    def run(self, rebalancer: Rebalancer, rounds: int) -> list:
        """Feed ``rounds`` rounds of shares; move whenever a move is wanted. Returns the
        plans made (placement changes)."""
        plans = []
        for _ in range(rounds):
            active = self.placement.active()
            shares, busy = self.shares(), self.busy()
            if rebalancer.observe(active, shares[active], busy[active], self.placement):
                moves = rebalancer.take(self.placement)
                assert len(moves)              # a pause is asked for only with a plan
                plans.append((moves, shares, self.placement.pmap.owner[moves.partitions]))
                self.placement = self.placement.after(moves)
        return plans


def test_a_slow_server_is_evened_out_and_then_left_alone():
    """Server 0 three times slower: within a few plans every server is busy within the
    margin of the mean; over 200 more rounds of the same load nothing moves again, and no
    partition ever moves twice."""
    cluster = Cluster([3.0, 1.0])
    rebalancer, _ = cluster.rebalancer(max_bytes=64 * MiB)
    before = cluster.shares()
    plans = cluster.run(rebalancer, 60)
    after = cluster.shares()
    assert before.max() / before.mean() > 1.4
    assert after.max() / after.mean() < 1.15
    made = [m for m, _, _ in plans if len(m)]
    assert 1 <= len(made) <= 8
    assert cluster.run(rebalancer, 200) == []
    moved = np.concatenate([m.partitions for m in made])
    assert np.unique(moved).size == moved.size


def test_a_large_part_that_no_move_changes_is_learned_from_the_first_move():
    """Times per step with a fixed 0.4 (receiving, acknowledging): the first plan,
    which takes all of a server's time for load, moves too little; the next ones use the
    measured marginal cost and the servers are even within a few plans."""
    cluster = Cluster([3.0, 1.0], seed=6, fixed=0.4)
    cluster.scale *= 0.5
    rebalancer, _ = cluster.rebalancer(max_bytes=64 * MiB)
    plans = cluster.run(rebalancer, 40)
    made = [m for m, _, _ in plans if len(m)]
    after = cluster.shares()
    assert after.max() / after.mean() < 1.15 and 2 <= len(made) <= 6
    assert cluster.run(rebalancer, 100) == []


def test_a_plan_must_save_more_than_its_pause_costs():
    """Server 0 three times slower, so a plan would save about 40 % of each step: with 2
    s of the job left and pauses of 1 s it is not worth a pause (0.8 s saved < 3 x 1 s),
    and no pause is asked for however long the imbalance lasts; with 60 s left it is."""
    for left, wanted in ((2.0, False), (60.0, True)):
        cluster = Cluster([3.0, 1.0])
        rebalancer, _ = cluster.rebalancer(max_bytes=64 * MiB)
        times = cluster.shares()
        asked = [rebalancer.observe([0, 1], times, cluster.busy(), cluster.placement,
                                    time_left=left, pause_cost=1.0) for _ in range(30)]
        assert any(asked) == asked[-1] == wanted
        assert (len(rebalancer.take(cluster.placement)) > 0) == wanted


def test_even_servers_never_move():
    cluster = Cluster([1.0, 1.0, 1.0], seed=2)
    rebalancer, _ = cluster.rebalancer()
    shares = cluster.shares()
    assert shares.max() / shares.mean() < 1.15
    assert cluster.run(rebalancer, 100) == []


def test_plans_fit_the_spare_room_of_the_windows():
    """Windows with 2 % spare rows and a server three times slower, whose even share
    needs more than that (about 3 %): every plan fits the taker's spare rows (no table's
    windows are made anew during a move), and plans stop once the room is used up."""
    cluster = Cluster([3.0, 1.0], headroom=0.02)
    rebalancer, _ = cluster.rebalancer(max_bytes=64 * MiB)
    plans = []
    for _ in range(60):
        times = cluster.shares()
        if rebalancer.observe([0, 1], times, cluster.busy(), cluster.placement):
            moves = rebalancer.take(cluster.placement)
            after = cluster.placement.after(moves)
            plans.append(after.rebuilt)
            cluster.placement = after
    assert plans and all(rebuilt == () for rebuilt in plans)
    emb = cluster.placement.layouts[0]
    assert emb.shard_rows[1] > 0.99 * cluster.placement.capacity[0, 1]   # room used up
    assert cluster.shares()[0] > 1.15 * cluster.shares().mean()          # still slow


@pytest.mark.parametrize("excess, rounds", [(0.5, 3), (0.2, 6), (0.1, None)])
def test_an_imbalance_must_stand_out_from_jitter(excess, rounds):
    """With window 3 and margin 0.15: a server 50 % above the mean (over twice the
    margin) is acted on after 3 rounds, one 20 % above after 6, one 10 % above never;
    the same excess switching between servers never."""
    rebalancer, _ = Cluster([1.0, 1.0]).rebalancer()
    placement = Placement.start(SPECS, 2, 2)
    slow = np.array([1 + excess, 1 - excess])
    wanted = [rebalancer.observe([0, 1], slow, slow * 0.6, placement) or
              rebalancer.wanted() == "balance" for _ in range(8)]
    assert wanted.index(True) + 1 == rounds if rounds else not any(wanted)
    rebalancer, _ = Cluster([1.0, 1.0]).rebalancer()
    assert not any(rebalancer.observe([0, 1], slow[::(-1) ** r], slow * 0.6, placement)
                   or rebalancer.wanted() for r in range(40))


def test_noise_below_the_margin_moves_nothing():
    """Busy shares that jitter by up to 10 % around an even load."""
    cluster = Cluster([1.0, 1.0], seed=4)
    rebalancer, _ = cluster.rebalancer()
    rng = np.random.default_rng(0)
    for _ in range(300):
        shares = cluster.shares() * rng.uniform(0.95, 1.05, 2)
        assert not rebalancer.observe([0, 1], shares, 0.9 * shares / shares.max(),
                                      cluster.placement)


def noisy_run(cluster: Cluster, rebalancer: Rebalancer, rounds: int, noise: float,
              seed: int) -> int:
    """Like ``Cluster.run`` with each measured time off by up to ``noise`` either way;
    the number of plans carried out."""
    rng, plans = np.random.default_rng(seed), 0
    for _ in range(rounds):
        times = cluster.shares() * rng.uniform(1 - noise, 1 + noise, cluster.speed.size)
        if rebalancer.observe(cluster.placement.active(), times, 0.9 * times / times.max(),
                              cluster.placement):
            cluster.placement = cluster.placement.after(rebalancer.take(cluster.placement))
            plans += 1
    return plans


@pytest.mark.parametrize("seed", range(4))
def test_a_noisy_even_load_makes_it_back_off(seed):
    """Even servers measured with 30 % noise either way (more than the margin): plans
    that do not help double the rounds it waits, so it makes a handful of plans in 400
    rounds (17 to 28 for these seeds when it never waits longer) and the servers stay
    even."""
    cluster = Cluster([1.0, 1.0], seed=4)
    rebalancer, _ = cluster.rebalancer(window=2)
    assert noisy_run(cluster, rebalancer, 400, 0.3, seed) <= 10
    times = cluster.shares()
    assert times.max() / times.mean() < 1.15


@pytest.mark.parametrize("seed", range(4))
def test_a_slow_server_is_evened_out_through_noise(seed):
    cluster = Cluster([3.0, 1.0])
    rebalancer, _ = cluster.rebalancer(window=2, max_bytes=64 * MiB)
    assert 1 <= noisy_run(cluster, rebalancer, 100, 0.1, seed) <= 4
    times = cluster.shares()
    assert times.max() / times.mean() < 1.15 and rebalancer.window == 2


def test_an_imbalance_no_move_can_narrow_asks_for_no_pause():
    """Even servers, but one partition carries most of the load: moving it only moves
    the imbalance, so the rebalancer wants a balance, plans nothing and asks for no
    pause (a pause costs every worker a stop)."""
    cluster = Cluster([1.0, 1.0], seed=7)
    hot = int(np.flatnonzero(cluster.placement.pmap.owner == 0)[0])
    cluster.load[:] = 0.0
    cluster.load[hot] = 100.0
    cluster.load[np.flatnonzero(cluster.placement.pmap.owner == 1)[:10]] = 4.0
    cluster.scale = 0.6 / (cluster.load.sum() / 2)
    rebalancer, _ = cluster.rebalancer()
    shares = cluster.shares()
    assert shares.max() / shares.mean() > 1.3
    assert cluster.run(rebalancer, 20) == []
    assert rebalancer.wanted() == "balance" and rebalancer.tabu == {}


def test_a_plan_made_for_an_older_placement_is_not_carried_out():
    """A plan is ready, then the placement changes (another move): taking it then moves
    nothing, and the next plan needs new rounds."""
    cluster = Cluster([3.0, 1.0])
    rebalancer, _ = cluster.rebalancer()
    for _ in range(3):
        ready = rebalancer.observe([0, 1], cluster.shares(), cluster.busy(),
                                   cluster.placement)
    assert ready
    first = int(np.flatnonzero(cluster.placement.pmap.owner == 0)[0])
    other = cluster.placement.after(Moves(np.array([first]), np.array([1], np.int32)))
    assert len(rebalancer.take(other)) == 0 and rebalancer.ready is None
    assert rebalancer.history == [] and rebalancer.tabu == {}


def test_plans_respect_the_byte_bound_and_move_only_downhill():
    """A tight bound (1/4 MiB a plan, about 600 sparse partitions) that stops plans:
    each stays under it, takes from busier servers only and gives to idler ones only;
    after a few plans the servers are even."""
    cluster = Cluster([3.0, 1.0, 1.0], seed=1)
    rebalancer, _ = cluster.rebalancer(max_bytes=MiB / 4)
    nbytes = partition_bytes(SPECS, 1)
    plans = cluster.run(rebalancer, 300)
    assert len(plans) >= 2
    assert max(nbytes[m.partitions].sum() for m, _, _ in plans) > 0.8 * MiB / 4   # bound
    for moves, shares, before in plans:
        assert nbytes[moves.partitions].sum() <= MiB / 4
        mean = shares[[0, 1, 2]].mean()
        assert (shares[before] > mean).all() and (shares[moves.owners] < mean).all()
    final = cluster.shares()
    assert final.max() / final.mean() < 1.15


def test_most_load_per_byte_moves_first():
    """From the one busy server (by less than twice the margin, so after twice the
    window), partitions go in order of load per byte."""
    cluster = Cluster([1.5, 1.0], seed=3)
    rebalancer, stats = cluster.rebalancer(max_bytes=64 * MiB)
    (moves, _, before), *_ = cluster.run(rebalancer, 6)
    assert len(moves) and (before == 0).all()
    ratio = stats.partition_load[moves.partitions] / partition_bytes(SPECS, 1)[moves.partitions]
    assert (np.diff(ratio) <= 1e-12).all()


def test_a_standby_joins_when_every_server_is_busy():
    """Two balanced servers, both busy over JOIN_BUSY: the standby joins (the ring's
    minimum moves, all onto it); with the busy share under it, nobody joins."""
    cluster = Cluster([1.0, 1.0], seed=5, standby=1, utilization=JOIN_BUSY + 0.2)
    rebalancer, _ = cluster.rebalancer(standby=[2])
    plans = cluster.run(rebalancer, 3)
    (moves, _, _), = plans
    assert moves.reason == "join" and set(moves.owners.tolist()) == {2}
    assert len(moves) / 65536 < 1.1 / 3 and rebalancer.standby == []
    quiet = Cluster([1.0, 1.0], seed=5, standby=1, utilization=JOIN_BUSY - 0.2)
    assert quiet.run(quiet.rebalancer(standby=[2])[0], 20) == []


def test_load_stats_keep_one_epoch_and_rounds():
    stats = LoadStats(2, 16)
    stats.placement_changed(3)
    stats.server(0, ServerLoad(0.5, 1.0, 100, 10, 2))           # an older epoch: ignored
    stats.server(1, ServerLoad(0.9, 1.0, 100, 1, 3))            # one step: ignored
    assert not stats.round_complete([0, 1]) and stats.shares.tolist() == [0, 0]
    stats.server(0, ServerLoad(0.5, 1.0, 100, 10, 3))
    assert not stats.round_complete([0, 1])
    stats.server(1, ServerLoad(0.25, 1.0, 50, 10, 3))
    stats.partitions(np.ones(16, np.float32))
    assert stats.round_complete([0, 1]) and stats.shares.tolist() == [0.5, 0.25]
    assert stats.rows_per_step.tolist() == [10.0, 5.0] and stats.partition_load[0] == 0.5
    assert not stats.round_complete([0, 1])


def test_meters():
    clock = iter([0.0, 1.0, 2.5, 4.0]).__next__
    meter = BusyMeter(clock)
    meter.add(0.25, rows=10, steps=1)
    first = meter.report(7)
    assert (first.busy, first.wall, first.rows, first.steps, first.epoch) == (0.25, 1.0, 10,
                                                                              1, 7)
    meter.add(0.5, rows=5, steps=2)
    total = meter.final(7)
    assert total.final and total.busy == 0.75 and total.wall == 2.5 and total.rows == 15
    assert ServerLoad.decode(total.encode()) == total
    layout = TableLayout.build(1000, 3, Placement.start(SPECS, 1, 1).pmap)
    pm = PartitionMeter(65536)
    for _ in range(SAMPLE_EVERY):
        pm.count([layout], [9], [np.array([0, 1, 2])])
    counts = pm.take()
    assert counts.sum() == 3 * 9 * SAMPLE_EVERY and pm.counts.sum() == 0


def test_load_watch_waits_for_every_final_report():
    placement = Placement.start(SPECS, 2, 2)
    watch = LoadWatch(LoadStats(2, 65536), None, placement)
    watch.server(0, ServerLoad(1, 2, 3, 4, 0, final=True), placement)
    assert not watch.all_final
    watch.server(1, ServerLoad(1, 4, 3, 0, 0, final=True), placement)
    assert watch.all_final and watch.summary()["server_busy"] == [0.5, 0.25]
    assert watch.summary()["rebalance_seconds"] == 0.0          # no rebalancer: no time


@pytest.mark.parametrize("slots", [0, 2])
def test_partition_bytes_cover_every_table(slots):
    b = partition_bytes(SPECS, slots)
    total = sum(s.rows * s.dim * 4 * (1 + slots) for s in SPECS)
    assert b.sum() == pytest.approx(total)


def test_benchmarks_reverse_every_second_repeat(monkeypatch):
    """``interleaved`` with ``alternate``: repeats 2, 4, ... run the jobs in reverse, so
    no mode always follows the same job (bench balance's even-server cost)."""
    order = []

    def fake_train(cfg, comm, verbose):
        order.append(cfg)
        return SimpleNamespace(metrics={"samples_per_s": 1.0})
    monkeypatch.setattr(bench_sync, "train", fake_train)
    jobs = [(k, k, k) for k in "abc"]
    args = SimpleNamespace(repeats=3, json=True)
    runs = bench_sync.interleaved(jobs, args, None, lambda m: m, alternate=True)
    assert "".join(order) == "abccbaabc"
    assert {k: len(v) for k, v in runs.items()} == {"a": 3, "b": 3, "c": 3}
    order.clear()
    bench_sync.interleaved(jobs, args, None, lambda m: m)
    assert "".join(order) == "abc" * 3


def test_bench_balance_even_only_reports_the_even_ratios():
    """``--even-only`` runs the three even jobs: the table has their ratios (balanced
    against the pooled static runs, static against itself) and none of the slow ones."""
    def run(rate):
        return {"samples_per_s": rate, "second_half": rate, "auc": 0.7, "moves": 0.0,
                "moved_mib": 0.0, "pause_s": 0.0, "busy0": 0.8, "busy1": 0.8,
                "decide_s": 0.0}
    args = SimpleNamespace(factor=3.0, repeats=2, rows=1000, model="fm", optimizer="adam",
                           lr=0.005, batch_size=2048, embedding_dim=16, sync="async",
                           even_only=True)
    assert [m for m, *_ in bench_balance.modes(args)] == \
        ["even static", "even balanced", "even static again"]
    runs = {"even static": [run(100.0), run(110.0)], "even balanced": [run(99.0), run(99.0)],
            "even static again": [run(100.0), run(90.0)]}
    rec = bench_balance.table(runs, args, 5)
    assert rec["even_balanced_vs_static"] == pytest.approx(99.0 / 100.0)
    assert rec["even_balanced_vs_static_by_repeat"] == pytest.approx([0.99, 0.99])
    assert rec["even_static_again_by_repeat"] == pytest.approx([1.0, 90.0 / 110.0])
    assert "slow_balanced_vs_static" not in rec
    text = bench_balance.report(rec)
    assert "even balanced / even static: 0.990" in text and "slow" not in text.split("\n", 1)[1]
