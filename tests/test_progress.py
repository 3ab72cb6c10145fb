"""The scheduler's view of progress and its metrics file, without processes."""
import json

import numpy as np

from mpips.scheduler import MetricsLog, Progress


def test_progress_records_rate_loss_and_eta():
    p = Progress(n_workers=2, epochs=2)
    p.update(0, np.array([0, 100, 50.0, 1000, 0, 1]))
    p.update(1, np.array([1, 300, 90.0, 1000, 0, 3]))
    p.start -= 2.0                                  # as if two seconds had passed
    r = p.record()
    assert r["samples"] == 400 and r["planned"] == 2000 and r["epoch"] == 1
    assert abs(r["loss"] - 140.0 / 400) < 1e-12
    assert 150 < r["samples_per_s"] < 250 and 6 < r["eta_s"] < 12
    line = p.line(r)
    assert "epoch 1/2" in line and "400/2,000 samples" in line and "ETA" in line
    assert not p.finished
    wire = dict(r, push_mb_s=2.0, push_raw_mb_s=6.0, pull_mb_s=1.0, pull_raw_mb_s=1.0)
    assert "push 2.0 MB/s (3.0x fewer)  pull 1.0 MB/s" in p.line(wire)
    assert p.line(wire).endswith("pull 1.0 MB/s")
    assert p.line(dict(wire, pull_raw_mb_s=3.2)).endswith("pull 1.0 MB/s (3.2x fewer)")


def test_loss_is_the_mean_since_the_previous_record():
    p = Progress(n_workers=1, epochs=1)
    p.update(0, np.array([0, 100, 70.0, 200, 0, 1]))
    p.record()
    p.update(0, np.array([0, 200, 90.0, 200, 1, 2]))
    assert abs(p.record()["loss"] - 0.2) < 1e-12
    assert p.finished


def test_metrics_file_is_valid_json_lines(tmp_path):
    """NaN and infinity (a one-class test set, an unknown ETA) are written as null."""
    log = MetricsLog(str(tmp_path / "m.jsonl"))
    log.write({"event": "final", "auc": float("nan"), "eta_s": float("inf"), "samples": 3})
    log.close()
    rec = json.loads((tmp_path / "m.jsonl").read_text())
    assert rec == {"event": "final", "auc": None, "eta_s": None, "samples": 3}
