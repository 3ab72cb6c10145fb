"""Checkpoint files without MPI: layout, manifest, checked reads, elastic read plans."""
import json

import numpy as np
import pytest

from mpips.checkpoint import layout, manifest
from mpips.checkpoint.shardfile import ServerFile, write_server_file
from mpips.clocks import Start
from mpips.config import TrainConfig
from mpips.errors import CheckpointError, ConfigError, ProtocolError
from mpips.models import TableSpec
from mpips.pausing import PauseSchedule, pause_lead


def make_checkpoint(run_dir, step, servers=1, keep=3):
    partial = layout.partial_dir(run_dir, step)
    partial.mkdir(parents=True, exist_ok=True)
    entries = []
    for s in range(servers):
        arr = np.full((10, 2), step + s, np.float32)
        entry = write_server_file(partial / layout.server_file(s), {"x": arr}, {"server": s})
        entries.append({"index": s, "file": layout.server_file(s), **entry})
    cfg = TrainConfig()
    doc = manifest.build(step, False, cfg, [TableSpec("weights", 10, 2)], ["accum"],
                         {"servers": servers}, entries, [], 1.0)
    layout.write_json(partial / layout.MANIFEST, doc)
    return layout.publish(run_dir, partial, step, keep,
                          {layout.MANIFEST, *(e["file"] for e in entries)})


def test_publish_points_latest_and_keeps_the_newest(tmp_path):
    for step in (10, 20, 30, 40):
        make_checkpoint(tmp_path, step, keep=2)
    assert (tmp_path / "LATEST").read_text().strip() == layout.step_name(40)
    assert [p.name for p in layout.complete_steps(tmp_path)] == \
        [layout.step_name(40), layout.step_name(30)]


def test_a_resumed_timeline_replaces_the_later_checkpoints_it_left(tmp_path):
    """Resumed from step 20 after step 30 was written: the new step 25 is the latest and
    survives pruning; step 30 belonged to the abandoned timeline. Files a crashed attempt
    left in the folder are not published."""
    for step in (10, 20, 30):
        make_checkpoint(tmp_path, step)
    layout.partial_dir(tmp_path, 25).mkdir()
    (layout.partial_dir(tmp_path, 25) / "server-0009.h5").write_bytes(b"left by a crash")
    path = make_checkpoint(tmp_path, 25, keep=1)
    assert [p.name for p in layout.candidates(tmp_path)] == [layout.step_name(25)]
    assert sorted(p.name for p in path.iterdir()) == [layout.MANIFEST, layout.server_file(0)]


def test_half_written_checkpoints_are_never_candidates(tmp_path):
    make_checkpoint(tmp_path, 10)
    layout.partial_dir(tmp_path, 20).mkdir()                  # crashed while writing
    (tmp_path / layout.step_name(30)).mkdir()                  # no manifest
    assert [p.name for p in layout.candidates(tmp_path)] == [layout.step_name(10)]


def test_latest_comes_first_then_newest(tmp_path):
    for step in (10, 20):
        make_checkpoint(tmp_path, step)
    (tmp_path / "LATEST").write_text(layout.step_name(10))
    assert [p.name for p in layout.candidates(tmp_path)] == \
        [layout.step_name(10), layout.step_name(20)]


def test_resume_candidates_from_a_path(tmp_path):
    path = make_checkpoint(tmp_path / "run", 10)
    assert layout.resume_candidates(str(path), tmp_path / "other") == [path]
    assert layout.resume_candidates(str(tmp_path / "run"), tmp_path / "other") == [path]
    assert layout.resume_candidates("latest", tmp_path / "run") == [path]


def test_server_file_round_trip_and_partial_reads(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((600_000, 4)).astype(np.float32)     # ten blocks
    entry = write_server_file(tmp_path / "f.h5", {"a": arr}, {})
    with ServerFile(tmp_path / "f.h5", entry) as f:
        np.testing.assert_array_equal(f.read("a"), arr)
        out = np.zeros((50, 4), np.float32)
        src, dst, n = np.array([5, 70_000, 599_990]), np.array([0, 10, 40]), np.array([10, 30, 10])
        read = f.read_runs("a", src, dst, n, out)
        assert read <= 3 * (1 << 20)          # three blocks, not the file
    for s, d, k in zip(src, dst, n):
        np.testing.assert_array_equal(out[d:d + k], arr[s:s + k])


def test_truncated_and_bit_flipped_files_are_detected(tmp_path):
    arr = np.arange(400_000, dtype=np.float32).reshape(-1, 4)
    path = tmp_path / "f.h5"
    entry = write_server_file(path, {"a": arr}, {})
    data = bytearray(path.read_bytes())
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        ServerFile(path, entry)
    offset = bytes(data).find(arr[1000].tobytes())          # inside the rows, not metadata
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    with ServerFile(path, entry) as f, pytest.raises(CheckpointError, match="checksum"):
        f.read("a")
    with ServerFile(path, entry) as f, pytest.raises(CheckpointError, match="checksum"):
        f.verify("a")


def test_manifest_errors_name_the_file(tmp_path):
    step = make_checkpoint(tmp_path, 10)
    (step / layout.MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest.json"):
        manifest.load(step)
    (step / layout.MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not an mpips checkpoint"):
        manifest.load(step)
    doc = manifest.build(10, False, TrainConfig(), [], [], {"servers": 1},
                         [{"index": 0, "file": layout.server_file(0), "bytes": 1}], [], 0.0)
    (step / layout.MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="'servers' lacks"):
        manifest.load(step)


def test_settings_that_change_the_state_are_refused():
    cfg = TrainConfig()
    doc = {"settings": manifest.settings(cfg)}
    manifest.check_settings(doc, cfg.replace(servers=3, checkpoint_every=5), "ck")
    with pytest.raises(ConfigError, match="--batch-size"):
        manifest.check_settings(doc, cfg.replace(batch_size=64), "ck")
    # A checkpoint written before a setting existed had that setting's default.
    older = {"settings": {k: v for k, v in doc["settings"].items() if k != "balance"}}
    manifest.check_settings(older, cfg, "ck")
    with pytest.raises(ConfigError, match="--balance 'auto', this job has 'off'"):
        manifest.check_settings(older, cfg.replace(balance="off"), "ck")


def test_setup_refuses_to_mix_runs_and_to_resume_nothing(tmp_path):
    cfg = TrainConfig(checkpoint_dir=str(tmp_path), checkpoint_every=5)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        manifest.check_setup(cfg.replace(resume="latest"), 2, (0, 1000))
    make_checkpoint(cfg.run_dir, 10)
    with pytest.raises(ConfigError, match="--resume"):
        manifest.check_setup(cfg, 2, (0, 1000))


def test_pause_steps():
    assert [pause_lead(b) for b in (0, 3, None)] == [1, 4, 0]
    every5 = PauseSchedule(checkpoint_every=5)
    assert every5.stops_at(10, 0, 0) and not every5.stops_at(11, 0, 0)
    assert not every5.stops_at(10, 10, 0)                 # never where the job (re)started
    never = PauseSchedule()
    assert never.stops_at(12, 0, 12) and never.stops_at(13, 0, 12) \
        and not never.stops_at(11, 0, 12)
    both = PauseSchedule(checkpoint_every=6, move_every=4, steps=frozenset({7}))
    assert [s for s in range(1, 13) if both.stops_at(s, 0, 0)] == [4, 6, 7, 8, 12]


def test_start_of_a_resumed_job():
    start = Start((7, 7, 9), (False, False, True))
    assert start.round().step == 7 and start.round().active == {0, 1}
    assert start.last_steps() == {0: 6, 1: 6}
    with pytest.raises(ProtocolError, match="different steps"):
        Start((7, 8), (False, False)).round()
