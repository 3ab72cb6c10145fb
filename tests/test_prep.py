"""``mpips prep`` in one process: shards hold the text's rows in order whatever the number
of shards; files a failed run leaves are never trusted; setup errors are one line."""
import json

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import mpips.prep

from launch import launch
from mpips.cli import build_parser
from mpips.config import TrainConfig
from mpips.data.parse import parse_reference
from mpips.data.plan import plan_data
from mpips.errors import DataError, MpipsError
from mpips.prep import check_prep, run_prep
from textdata import criteo_text, libsvm_text, write


def prep(*argv: str):
    """Run ``mpips prep ARGV`` in this process (one rank)."""
    args = build_parser().parse_args(["prep", *argv])
    return run_prep(check_prep(args, 1), MPI.COMM_SELF, verbose=False)


def all_rows(cfg: TrainConfig):
    src = plan_data(cfg).train
    batches = list(src.batches(0, src.rows, 97))
    return tuple(np.concatenate([getattr(b, f) for b in batches])
                 for f in ("keys", "vals", "labels"))


@pytest.mark.parametrize("fmt,make", [("criteo", criteo_text), ("libsvm", libsvm_text)])
@pytest.mark.parametrize("shards", [1, 4])
def test_shards_hold_the_text_rows_in_order(tmp_path, fmt, make, shards):
    """Two inputs into K shards: the same keys, values and labels as the text, any K,
    even with a different training seed (hashing keeps the prep seed)."""
    a = write(tmp_path, "a.txt", make(150, 1))
    b = write(tmp_path, "b.txt", make(77, 2))
    both = write(tmp_path, "ab.txt", a.read_text() + b.read_text())
    m = prep(str(a), str(b), "--format", fmt, "--out", str(tmp_path / "out"),
             "--shards", str(shards), "--seed", "4")
    assert m.rows == 227 and len(m.shards) == shards and m.seed == 4
    text = all_rows(TrainConfig(data=str(both), format=fmt, seed=4, table_rows=5000))
    shard = all_rows(TrainConfig(data=str(tmp_path / "out"), seed=9, table_rows=5000))
    for x, y in zip(text, shard):
        assert np.array_equal(x, y)
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["rows"] == 227 and manifest["format"] == fmt
    assert manifest["stats"]["positives"] == text[2].sum()


def test_shards_of_the_compiled_parser_equal_the_reference_parsers(tmp_path, monkeypatch):
    """Nothing changes but speed: prep with the reference parser in place of the compiled
    one writes the same datasets, manifest statistics and skip count (bad lines too)."""
    text = criteo_text(400) + "1\tx\n" + criteo_text(300, 1) + "\n" + criteo_text(5, 2)
    data = write(tmp_path, "d.tsv", text)
    args = ("--out", "--shards", "3", "--on-bad-line", "skip")
    m = prep(str(data), args[0], str(tmp_path / "c"), *args[1:])
    monkeypatch.setattr(mpips.prep, "parse_bytes", parse_reference)
    r = prep(str(data), args[0], str(tmp_path / "r"), *args[1:])
    assert (m.rows, m.bad_lines, m.stats) == (r.rows, r.bad_lines, r.stats) == \
        (705, 2, r.stats)
    for s in m.shards:
        with h5py.File(tmp_path / "c" / s["file"]) as a, \
                h5py.File(tmp_path / "r" / s["file"]) as b:
            assert all(np.array_equal(a[k][:], b[k][:]) for k in ("ids", "vals", "labels"))


def test_a_failed_prep_leaves_nothing_trusted(tmp_path):
    """A bad line stops the prep: the old manifest is gone, so nothing is read."""
    out = tmp_path / "out"
    good = write(tmp_path, "g.tsv", criteo_text(50))
    prep(str(good), "--out", str(out))
    bad = write(tmp_path, "b.tsv", criteo_text(50) + "1\tx\n" + criteo_text(5))
    with pytest.raises(DataError, match="b.tsv:51: expected 40 TAB-separated columns"):
        prep(str(bad), "--out", str(out))
    assert not (out / "manifest.json").exists()
    with pytest.raises(DataError, match="b.tsv:51: "):       # line numbers in later parts
        prep(str(good), str(bad), "--out", str(out), "--shards", "5")
    with pytest.raises(DataError, match="no manifest.json"):
        plan_data(TrainConfig(data=str(out)))


def test_shards_that_do_not_match_the_manifest_are_refused(tmp_path):
    out = tmp_path / "out"
    prep(str(write(tmp_path, "g.tsv", criteo_text(50))), "--out", str(out), "--shards", "2")
    shard = out / "shard-00001.h5"
    shard.write_bytes(shard.read_bytes() + b"x")
    with pytest.raises(DataError, match="shard-00001.h5: missing or not the size"):
        plan_data(TrainConfig(data=str(out)))


def test_skip_counts_bad_lines_in_the_manifest(tmp_path):
    text = libsvm_text(30) + "1 3:x\n" + libsvm_text(10, 5) + "\n"
    m = prep(str(write(tmp_path, "d.txt", text)), "--format", "libsvm", "--out",
             str(tmp_path / "o"), "--on-bad-line", "skip", "--shards", "3")
    assert m.rows == 40 and m.bad_lines == 2


@pytest.mark.parametrize("argv,msg", [
    (["nope.txt"], "nope.txt: no such file"),
    (["empty.txt"], "empty.txt: the file is empty"),
    (["x.csv", "--format", "csv", "--config", "s.toml"],
     "x.csv: the header has no column 'age'"),
    (["x.csv"], "x.csv:1: expected 40 TAB-separated columns, found 1"),
])
def test_setup_errors(tmp_path, argv, msg):
    (tmp_path / "empty.txt").write_text("")
    write(tmp_path, "x.csv", "clicked,site,other\n1,a,b\n")
    write(tmp_path, "s.toml", '[csv]\nlabel = "clicked"\nnumeric = ["age"]\n')
    args = build_parser().parse_args(["prep", *[str(tmp_path / a) if "." in a else a
                                                for a in argv], "--out", str(tmp_path / "o")])
    with pytest.raises(MpipsError, match=msg):
        check_prep(args, 1)


def test_cli_errors_are_one_line_before_any_work(tmp_path):
    """Under mpiexec: one message, exit status 2, no traceback."""
    r = launch(2, "prep", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"), timeout=60)
    assert r.returncode == 2 and r.stderr.count("nope.txt: no such file") == 1
    assert "Traceback" not in r.stderr
    r = launch(3, "train", "--data", str(tmp_path), timeout=60)
    assert r.returncode == 2 and r.stderr.count("no manifest.json") == 1


def test_cli_prep_and_train_from_shards(tmp_path):
    data = write(tmp_path, "d.txt", libsvm_text(600))
    r = launch(2, "prep", str(data), "--format", "libfm", "--out", str(tmp_path / "o"),
               timeout=90)
    assert r.returncode == 0, r.stderr
    assert "600 rows of 1 input(s) into 2 shard(s)" in r.stdout
    r = launch(4, "train", "--data", str(tmp_path / "o"), "--epochs", "1", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "AUC" in r.stdout


def test_text_training_reports_skipped_lines(tmp_path):
    data = write(tmp_path, "d.txt", libsvm_text(300) + "1 a\n" + libsvm_text(90, 1))
    metrics = tmp_path / "m.jsonl"
    r = launch(4, "train", "--data", str(data), "--format", "libsvm", "--on-bad-line",
               "skip", "--epochs", "2", "--metrics-out", str(metrics), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "skipped 1 bad line(s)" in r.stdout
    assert json.loads(metrics.read_text().splitlines()[-1])["bad_lines_skipped"] == 1
