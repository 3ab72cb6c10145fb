"""Validation and early stopping without processes: when a job validates, what a score
means, and a validating pause walked record by record (scored, best kept, early stop)."""
import math

import numpy as np
import pytest

from mpips.config import TrainConfig
from mpips.data.plan import plan_data
from mpips.errors import ConfigError
from mpips.models import TableSpec
from mpips.pausing import GO, WRITE, AskWrite, Evaluate, PauseMachine, PauseSchedule, \
    Publish, Reply, Verdict
from mpips.placement import Placement
from mpips.validation import EarlyStopping, EvalSchedule, eval_schedule

SPECS = [TableSpec("w", 5000, 1), TableSpec("bias", 1, 1)]


def test_validations_are_due_every_epoch_and_every_n_steps_before_the_end():
    s = EvalSchedule(every=4, epoch_steps=10, end=30)
    assert [t for t in range(0, 31) if s.due(t)] == [4, 8, 10, 12, 16, 20, 24, 28]
    assert not EvalSchedule().any and EvalSchedule(0, 10, 30).any


def test_the_schedule_follows_the_longest_share():
    cfg = TrainConfig(synthetic_rows=10_000, batch_size=1000, epochs=3)
    plan = plan_data(cfg)
    assert plan.train_range == (0, 7200) and plan.val_range == (7200, 8000)
    s = eval_schedule(cfg, plan.train_range, 2)       # 3600 rows a worker: 4 batches
    assert (s.epoch_steps, s.end) == (4, 12)
    assert eval_schedule(TrainConfig(val_fraction=0), (0, 100), 2) == EvalSchedule()
    assert TrainConfig().early_stop == 2 and TrainConfig(val_fraction=0).early_stop == 0


def test_early_stopping_counts_validations_without_a_strictly_better_auc():
    st = EarlyStopping(patience=2)
    decisions = [st.observe(step, a) for step, a in
                 [(10, 0.70), (20, 0.72), (30, 0.72), (40, float("nan")), (50, 0.80)]]
    assert [d.best for d in decisions] == [True, True, False, False, True]
    assert decisions[3].stop and not decisions[4].stop
    assert (st.best_auc, st.best_step, st.since_best) == (0.80, 50, 0)
    again = EarlyStopping.of_doc(2, st.doc())
    assert again.history[:3] == st.history[:3] and math.isnan(again.history[3][1])
    assert (again.best_auc, again.best_step, again.last_step) == (0.80, 50, 50)


def test_patience_zero_never_stops():
    st = EarlyStopping(0)
    assert not any(st.observe(s, 0.5).stop for s in range(10))


def machine(every=0, checkpointing=False) -> PauseMachine:
    return PauseMachine(2, 1, PauseSchedule(checkpoint_every=every,
                                            validations=EvalSchedule(0, 10, 40)),
                        checkpointing, lambda label, requested, p: None,
                        Placement.start(SPECS, 2, 2))


def paused(m: PauseMachine, label: int) -> list:
    rec = {"index": 0, "step": label, "finished": False, "samples": 5, "loss": 0.0}
    m.server_paused(0, label, [0], lambda w: None)
    m.server_paused(1, label, [0], lambda w: None)
    return m.worker_stopped(0, rec, lambda w: None)


def test_a_validating_pause_scores_then_writes_the_best_and_goes_on():
    m = machine()
    assert PauseSchedule(validations=EvalSchedule(0, 10, 40)).due(10)
    (ev,) = paused(m, 10)
    assert ev == Evaluate(10)
    assert m.check(lambda w: None) == []               # nothing more while scoring
    (ask,) = m.evaluated(best=True, stop=False)
    assert ask == AskWrite(10, keep=False, best=True)
    m.server_wrote(0, {"index": 0, "step": 10}, lambda w: None)
    publish, verdict = m.server_wrote(1, {"index": 1, "step": 10}, lambda w: None)
    assert isinstance(publish, Publish) and publish.best and not publish.keep
    assert isinstance(verdict, Verdict) and not verdict.early and not verdict.stop


def test_an_exhausted_patience_ends_training_without_a_write():
    m = machine()
    assert paused(m, 20) == [Evaluate(20)]
    (verdict,) = m.evaluated(best=False, stop=True)
    assert verdict.early and not verdict.stop and verdict.moves is None


def test_a_periodic_checkpoint_that_is_also_the_best_is_written_once():
    m = machine(every=10, checkpointing=True)
    paused(m, 10)
    (ask,) = m.evaluated(best=True, stop=False)
    assert ask == AskWrite(10, keep=True, best=True)


def test_replies_carry_the_early_and_best_flags():
    for r in (Reply(GO, 7, early=True), Reply(WRITE, 3, keep=False, best=True),
              Reply(GO, 2, stop=True)):
        assert Reply.decode(r.encode()) == r


@pytest.mark.parametrize("changes, message", [
    (dict(val_fraction=1.0), "--val-fraction must lie in"),
    (dict(val_fraction=-0.1), "--val-fraction must lie in"),
    (dict(early_stop=2, val_fraction=0.0), "--early-stop needs validation rows"),
    (dict(eval_every=5, val_fraction=0.0), "--eval-every needs validation"),
    (dict(early_stop=-1, val_fraction=0.1), "--early-stop must be >= 0"),
    (dict(val="v.tsv"), "--val needs --data"),
    (dict(admit_probability=0.0), "--admit-probability must lie in"),
    (dict(min_count=-1), "--min-count must be >= 0"),
    (dict(evict_after=-2), "--evict-after must be >= 0"),
])
def test_bad_settings_are_one_line_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_the_validation_rows_leave_the_training_rows():
    plan = plan_data(TrainConfig(synthetic_rows=1000, val_fraction=0.25))
    assert plan.train_range == (0, 600) and plan.val_range == (600, 800)
    assert plan.test_range == (800, 1000) and plan.val is plan.train
    assert np.array_equal(next(plan.val.batches(600, 610, 10)).labels,
                          next(plan.train.batches(600, 610, 10)).labels)


def test_a_resume_must_keep_the_settings_that_give_the_state_its_meaning():
    """Admission, eviction and validation settings change what the saved state means; a
    manifest from before they existed reads as written without them."""
    from mpips.checkpoint import manifest

    doc = {"settings": manifest.settings(TrainConfig(min_count=3))}
    for change, flag in ((dict(min_count=4), "--min-count"), (dict(evict_after=9), "--evict"),
                         (dict(val_fraction=0.2), "--val-fraction"),
                         (dict(admit_probability=0.5), "--admit-probability")):
        with pytest.raises(ConfigError, match=flag):
            manifest.check_settings(doc, TrainConfig(min_count=3).replace(**change), "ck")
    old = {"settings": {k: v for k, v in manifest.settings(TrainConfig()).items()
                        if k not in manifest.FORMER}}
    manifest.check_settings(old, TrainConfig(val_fraction=0, min_count=0), "ck")
    with pytest.raises(ConfigError, match="--early-stop|--min-count|--val-fraction"):
        manifest.check_settings(old, TrainConfig(), "ck")
