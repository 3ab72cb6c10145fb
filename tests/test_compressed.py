"""Compressed text inputs: ``.gz`` rows equal the plain file's (in order, shuffled, across
gzip members, restarting from kept decompressor states), prep shares whole compressed
files, ``.zst`` for prep; truncated or corrupt files are one-line errors naming them."""
import gzip

import numpy as np
import pytest

from launch import launch
from mpips.config import TrainConfig, from_mapping
from mpips.data import compressed, epoch_order
from mpips.data.compressed import Decompressed
from mpips.data.lines import split_inputs
from mpips.data.plan import plan_data
from mpips.errors import DataError
from mpips.prep_progress import progress_line
from test_prep import all_rows, prep
from textdata import criteo_text, libsvm_text, write

zstandard = pytest.importorskip("zstandard")


def gz(path, data: bytes, members: int = 1):
    """``data`` gzipped into ``members`` concatenated members."""
    cuts = np.linspace(0, len(data), members + 1).astype(int)
    path.write_bytes(b"".join(gzip.compress(data[a:b]) for a, b in zip(cuts, cuts[1:])))
    return path


def batches(cfg: TrainConfig, order=None):
    src = plan_data(cfg).train
    return [(b.keys, b.vals, b.labels) for b in src.batches(0, src.rows, 64, order)]


@pytest.mark.parametrize("fmt,make", [("criteo", criteo_text), ("libsvm", libsvm_text)])
def test_gz_rows_equal_the_plain_files(tmp_path, monkeypatch, fmt, make):
    """In order and in a shuffled order, from a 3-member file, with states kept every
    32 KiB so that reads restart from them."""
    monkeypatch.setattr(compressed, "SNAPSHOT_BYTES", 1 << 15)
    monkeypatch.setattr(compressed, "RAW_CHUNK", 1 << 12)
    text = write(tmp_path, "d.txt", make(3000, 3))
    packed = gz(tmp_path / "d.txt.gz", text.read_bytes(), members=3)
    order = epoch_order(47, 1, 5, 0, block=4)
    for o in (None, order):
        plain = batches(TrainConfig(data=str(text), format=fmt), o)
        got = batches(TrainConfig(data=str(packed), format=fmt), o)
        assert len(plain) == len(got) == 47
        assert all(np.array_equal(x, y) for p, g in zip(plain, got) for x, y in zip(p, g))


def test_seek_restarts_from_the_nearest_state(tmp_path, monkeypatch):
    monkeypatch.setattr(compressed, "SNAPSHOT_BYTES", 1 << 14)
    monkeypatch.setattr(compressed, "RAW_CHUNK", 1 << 11)
    data = criteo_text(2000).encode()
    with Decompressed(gz(tmp_path / "d.gz", data, members=2)) as fh:
        assert fh.read() == data and len(fh._snapshots) > 10
        rng = np.random.default_rng(0)
        for a in rng.integers(0, len(data), 40):
            fh.seek(int(a))
            assert fh.tell() == a and fh.read(5000) == data[a:a + 5000]


def test_truncated_and_corrupt_gz_are_one_line_errors(tmp_path):
    data = gzip.compress(criteo_text(3000).encode())
    short = tmp_path / "short.tsv.gz"
    short.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"short.tsv.gz: truncated gzip file: it ends before "
                       r"its end-of-stream marker"):
        plan_data(TrainConfig(data=str(short)))
    bad = tmp_path / "bad.tsv.gz"
    bad.write_bytes(data[:10] + bytes(50) + data[60:])
    with pytest.raises(DataError, match=r"bad.tsv.gz: not a valid gzip file"):
        plan_data(TrainConfig(data=str(bad)))
    with pytest.raises(DataError, match="short.tsv.gz: truncated gzip file"):
        prep(str(short), "--out", str(tmp_path / "o"))
    r = launch(3, "train", "--data", str(short), timeout=60)
    assert r.returncode == 2 and r.stderr.count("short.tsv.gz: truncated gzip file") == 1
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("fmt,make", [("criteo", criteo_text), ("libsvm", libsvm_text)])
def test_prep_of_compressed_files_equals_prep_of_plain(tmp_path, fmt, make):
    """A .gz, a plain and a .zst file into 4 shards: the rows of the plain files (the
    libSVM .gz ends with its widest line, past its compressed size)."""
    texts = [make(300, s).encode() for s in (1, 2, 3)]
    if fmt == "libsvm":
        texts[0] = b"".join(texts[0].splitlines(keepends=True)[:-1]) + \
            ("1 " + " ".join(f"{i}:1" for i in range(12)) + "\n").encode()
    plain = [write(tmp_path, f"p{i}.txt", t.decode()) for i, t in enumerate(texts)]
    packed = [gz(tmp_path / "a.txt.gz", texts[0]), plain[1], tmp_path / "c.txt.zst"]
    packed[2].write_bytes(zstandard.ZstdCompressor().compress(texts[2]))
    for name, inputs in (("plain", plain), ("packed", packed)):
        m = prep(*map(str, inputs), "--format", fmt, "--out", str(tmp_path / name),
                 "--shards", "4")
        assert m.rows == 900 and m.fields == (12 if fmt == "libsvm" else 39)
    a = all_rows(TrainConfig(data=str(tmp_path / "plain")))
    b = all_rows(TrainConfig(data=str(tmp_path / "packed")))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_csv_gz_header_and_prep(tmp_path):
    """A gzipped CSV reads like the plain one (its header from the stream); prep of a
    plain and a gzipped CSV, each with its header, into 3 shards gives the same rows."""
    head, rows = "clicked,site,age\n", ["1,a,3\n", "0,b,\n", "1,a,40\n", "0,c,2.5\n"] * 40
    text = head + "".join(rows)
    schema = {"format": "csv", "test_fraction": 0.5,
              "csv": {"label": "clicked", "numeric": ["age"], "categorical": ["site"]}}
    plain, packed = write(tmp_path, "c.csv", text), gz(tmp_path / "c.csv.gz", text.encode())
    got = [all_rows(from_mapping({**schema, "data": str(p)})) for p in (plain, packed)]
    assert all(np.array_equal(x, y) for x, y in zip(*got))
    toml = write(tmp_path, "s.toml", '[csv]\nlabel = "clicked"\nnumeric = ["age"]\n'
                 'categorical = ["site"]\n')
    both = write(tmp_path, "both.csv", text + "".join(rows))
    for name, inputs in (("one", [both]), ("two", [plain, packed])):
        m = prep(*map(str, inputs), "--format", "csv", "--config", str(toml), "--out",
                 str(tmp_path / name), "--shards", "3")
        assert m.rows == 320
    a, b = (all_rows(TrainConfig(data=str(tmp_path / n))) for n in ("one", "two"))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_zst_training_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "d.tsv.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(criteo_text(50).encode()))
    with pytest.raises(DataError, match=r"d.tsv.zst: training reads .gz or plain text; "
                       r"prepare .zst input with 'mpips prep'"):
        plan_data(TrainConfig(data=str(path)))


def test_split_gives_compressed_files_whole(tmp_path):
    """Each compressed file lies whole in the part that holds its middle byte; plain files
    are cut at line starts; every byte once, in order."""
    files = [write(tmp_path, "a.txt", criteo_text(100)),
             gz(tmp_path / "b.gz", criteo_text(400, 1).encode()),
             gz(tmp_path / "c.gz", criteo_text(50, 2).encode()),
             write(tmp_path, "d.txt", criteo_text(80, 3))]
    for parts in (1, 2, 3, 5, 9):
        split = split_inputs(files, parts)
        pieces = [p for part in split for p in part]
        assert [(p.file, p.begin) for p in pieces] == sorted((p.file, p.begin) for p in pieces)
        for f in (1, 2):
            (whole,) = [p for p in pieces if p.file == f]
            assert (whole.begin, whole.end) == (0, files[f].stat().st_size)
        for f in (0, 3):
            got = b"".join(files[f].read_bytes()[p.begin:p.end] for p in pieces if p.file == f)
            assert got == files[f].read_bytes()


def test_progress_line():
    line = progress_line(1_500_000, 3 << 30, 12 << 30, 60.0)
    assert line == ("[mpips] prep: 1,500,000 rows, 3.00 of 12.00 GiB (25 %), 25,000 rows/s, "
                    "ETA 3m00s")
    assert progress_line(0, 0, 10, 1.0).endswith("ETA ?")
    assert progress_line(10, 1, 4, 3600.0).endswith("ETA 3h00m")

