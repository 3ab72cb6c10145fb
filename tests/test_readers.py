"""Text readers of every format: rows, keys, labels in both conventions, line ends, bad
lines (an error naming file and line, or skipped and counted), random batch access."""
import re
from pathlib import Path

import numpy as np
import pytest

from mpips.config import TrainConfig, from_mapping
from mpips.data import epoch_order
from mpips.data.csvdata import float_buckets
from mpips.data.hashing import FieldHashing
from mpips.data.lines import count_lines, line_offsets, split_inputs
from mpips.data.plan import plan_data
from mpips.errors import ConfigError, DataError

ROW = "1\t" + "\t".join(["5"] * 13) + "\t" + "\t".join(["68fd1e64"] * 26)
SCHEMA = {"label": "clicked", "numeric": ["age"], "categorical": ["site", "ad"]}


def write(tmp_path: Path, text: str, name: str = "d.txt") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode())
    return p


def rows(cfg: TrainConfig, start: int = 0, stop: int | None = None, bs: int = 4):
    """(source, keys, vals, labels) of the whole training file."""
    src = plan_data(cfg).train
    bs_ = list(src.batches(start, src.rows if stop is None else stop, bs))
    cat = lambda xs: np.concatenate(xs)  # noqa: E731
    return src, cat([b.keys for b in bs_]), cat([b.vals for b in bs_]), cat([b.labels for b in bs_])


def text_cfg(path: Path, fmt: str, **kw) -> TrainConfig:
    """Half the rows test; none validate (the files have a few rows)."""
    return TrainConfig(data=str(path), format=fmt, table_rows=1 << 20, test_fraction=0.5,
                       **{"val_fraction": 0.0, **kw})


# ---- libSVM / libFM -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["libsvm", "libfm"])
def test_libsvm_rows_pad_and_labels_in_both_conventions(tmp_path, fmt):
    """CRLF, -1/+1 and 0/1 labels, no final newline; short rows padded with value 0
    (``libfm`` names the same format)."""
    p = write(tmp_path, "+1 3:0.5 7:2\r\n-1 7:1\n0 3:1 7:1 9:4\n1.0 9:1")
    src, k, v, y = rows(text_cfg(p, fmt))
    assert src.rows == 4 and src.fields == 3
    assert y.tolist() == [1, 0, 0, 1]
    pad = src.hashing.total_rows - 1
    assert k[0, 2] == pad and v[0, 2] == 0 and (k[:, 0] != pad).all() and k[1, 1] == pad
    assert v[0].tolist() == [0.5, 2, 0] and v[2].tolist() == [1, 1, 4]
    assert k[0, 1] == k[1, 0] == k[2, 1], "feature 7 has one key in any slot"
    assert len({k[0, 0], k[0, 1], k[2, 2]}) == 3


@pytest.mark.parametrize("line,msg", [
    ("1 3:1 x1 4:2", "field 3 'x1' is not idx:val"),
    ("1 3:1 -4:2", "field 3 '-4:2' is not idx:val"),
    ("1 3:nan", "field 2 '3:nan' is not idx:val"),
    ("2 3:1", "label '2' is not 0/1 or -1/+1"),
    ("", "empty line"),
])
def test_libsvm_bad_line_names_file_and_line(tmp_path, line, msg):
    p = write(tmp_path, "1 1:1\n0 2:1\n" + line + "\n1 1:1\n")
    src = plan_data(text_cfg(p, "libsvm")).train
    with pytest.raises(DataError, match=re.escape(f"d.txt:3: {msg}")):
        list(src.batches(0, 4, 2))


def test_skip_counts_bad_lines_once(tmp_path):
    """Skipped lines shorten their batch; reading the range again does not count twice."""
    p = write(tmp_path, "1 1:1\nbad\n0 2:1\n1 1:1 2:x\n1 3:1\n0 1:1\n")
    src = plan_data(text_cfg(p, "libsvm", on_bad_line="skip")).train
    for _ in range(2):
        sizes = [len(b) for b in src.batches(0, 6, 2)]
    assert sizes == [1, 1, 2] and src.bad_lines == 2


# ---- libFFM -------------------------------------------------------------------------------

def test_libffm_hashes_field_and_index(tmp_path):
    p = write(tmp_path, "1 0:5:1 1:5:0.5\n0 1:5:1\n1 0:5:1 1:6:1 2:7:1\n0 3:1:1\n")
    src, k, v, y = rows(text_cfg(p, "libffm"))
    assert src.fields == 3 and y.tolist() == [1, 0, 1, 0]
    assert k[0, 0] != k[0, 1] and k[0, 1] == k[1, 0] and k[0, 0] == k[2, 0]
    assert v[0, :2].tolist() == [1, 0.5] and v[1, 1:].tolist() == [0, 0]


def test_libffm_bad_token(tmp_path):
    p = write(tmp_path, "1 0:5:1\n1 0:5\n")
    with pytest.raises(DataError, match="d.txt:2: field 2 '0:5' is not field:idx:val"):
        list(plan_data(text_cfg(p, "libffm")).train.batches(0, 2, 2))


# ---- CSV ----------------------------------------------------------------------------------

def csv_cfg(path: Path, **schema) -> TrainConfig:
    return from_mapping({"data": str(path), "format": "csv", "csv": {**SCHEMA, **schema},
                         "test-fraction": 0.5, "table-rows": 1 << 20})


def test_csv_schema_columns_missing_values_and_labels(tmp_path):
    """Unlisted columns are ignored; empty cells are missing; true/false labels; CRLF,
    quotes and a last line without newline."""
    p = write(tmp_path, "id,site,age,clicked,ad\r\n1,a.com,30,1,x\r\n2,\"b,c\",,false,x\r\n"
              "3,a.com,31,TRUE,\n4,a.com,0,-1,y")
    src, k, v, y = rows(csv_cfg(p))
    assert src.rows == 4 and src.fields == 3 and y.tolist() == [1, 0, 1, 0]
    assert k[0, 1] == k[2, 1] != k[1, 1]                # site a.com twice
    assert k[0, 0] == k[2, 0], "30 and 31 share a half-octave"
    assert len({k[0, 0], k[1, 0], k[3, 0]}) == 3       # 30, missing, 0
    assert k[2, 2] != k[0, 2] and (v == 1).all()


def test_csv_header_must_hold_the_schema(tmp_path):
    p = write(tmp_path, "clicked,site,age\n1,a,3\n")
    with pytest.raises(DataError, match=r"d.txt: the header has no column 'ad'"):
        plan_data(csv_cfg(p))


def test_csv_needs_a_schema_and_a_valid_one(tmp_path):
    p = write(tmp_path, "clicked,site,age\n1,a,3\n")
    with pytest.raises(ConfigError, match=r"--format csv needs a \[csv\] section"):
        plan_data(text_cfg(p, "csv"))
    with pytest.raises(ConfigError, match="named twice"):
        csv_cfg(p, numeric=["site"], categorical=["site"])
    with pytest.raises(ConfigError, match="unknown setting 'csv.labels'"):
        from_mapping({"csv": {"labels": "x"}})


@pytest.mark.parametrize("line,msg", [
    ("1,a,x,q", "column 3 \\(age\\) 'x' is not a number"),
    ("yes,a,1,q", "label 'yes' is not 0/1, -1/\\+1 or true/false"),
    ("1,a,1", "expected 4 columns, found 3"),
])
def test_csv_bad_lines(tmp_path, line, msg):
    p = write(tmp_path, "clicked,site,age,ad\n1,a,1,q\n" + line + "\n1,a,1,q\n")
    with pytest.raises(DataError, match=f"d.txt:3: {msg}"):
        list(plan_data(csv_cfg(p)).train.batches(0, 3, 8))


def test_float_buckets():
    b = float_buckets(np.array([0.0, 1.0, 1.2, 3.0, -3.0, np.nan, 1e300]))
    assert len(set(b.tolist())) == 6, "1 and 1.2 share a half-octave, all else differ"
    assert b[1] == b[2] and b[3] != b[4]


# ---- Criteo, formats, batches -------------------------------------------------------------

def test_criteo_skip(tmp_path):
    p = write(tmp_path, ROW + "\n" + ROW.replace("\t5\t", "\tx\t", 1) + "\n" + ROW + "\n" * 2)
    src, k, v, y = rows(text_cfg(p, "criteo", on_bad_line="skip"))
    assert len(y) == 2 and src.bad_lines == 2          # the bad line and the empty last one


@pytest.mark.parametrize("cat", ["ffffffffffffffff", "-1", "1ffffffffffffffff"])
def test_criteo_categories_out_of_range_are_bad_lines(tmp_path, cat):
    """A category must not wrap onto the value that stands for a missing field."""
    p = write(tmp_path, ROW + "\n" + ROW[:-8] + cat + "\n")
    with pytest.raises(DataError, match=f"d.txt:2: column 40 '{re.escape(cat)}' is not a hex"):
        rows(text_cfg(p, "criteo"))


def test_unknown_format_is_a_config_error():
    with pytest.raises(ConfigError, match="--format must be one of criteo, libsvm, libfm, "
                       "libffm, csv, not 'svm'"):
        TrainConfig(format="svm")


@pytest.mark.parametrize("fmt,text", [
    ("libsvm", "".join(f"{i % 2} {i}:1 {i + 1}:0.5\n" for i in range(23))),
    ("criteo", "".join(ROW.replace("\t5\t", f"\t{i}\t", 1) + "\n" for i in range(23))),
])
def test_any_batch_alone_equals_the_same_batch_in_order(tmp_path, fmt, text):
    src = plan_data(text_cfg(write(tmp_path, text), fmt)).train
    seq = list(src.batches(2, 21, 4))
    order = [3, 0, 4, 2, 1]
    for b, batch in zip(order, src.batches(2, 21, 4, order)):
        assert np.array_equal(batch.keys, seq[b].keys)
        assert np.array_equal(batch.labels, seq[b].labels)


def test_epoch_order_is_a_seeded_shuffle():
    a = epoch_order(50, 0, 1, 0)
    assert sorted(a.tolist()) == list(range(50)) and not (a == np.arange(50)).all()
    assert np.array_equal(a, epoch_order(50, 0, 1, 0))
    assert not np.array_equal(a, epoch_order(50, 1, 1, 0))
    assert not np.array_equal(a, epoch_order(50, 0, 1, 1))
    assert epoch_order(2, 0, 0, 0).tolist() == [1, 0] and epoch_order(1, 3, 0, 0).tolist() == [0]
    assert all(not (epoch_order(2, e, 0, w) == [0, 1]).all() for e in range(9) for w in range(3))


def test_hashing_split_into_ids_and_rows():
    """Rows are ``id % size + start`` per field, computed by hand here: the power-of-two
    shortcut and the modulo, a shared range and a field's own range."""
    raw = np.random.default_rng(1).integers(0, 2**62, (300, 4)).astype(np.uint64)
    for h, size, start in ((FieldHashing(1 << 12, 3), [4096] * 4, [0] * 4),
                           (FieldHashing(1000, 3, (0, 5)), [1000, 5, 1000, 1000],
                            [0, 1000, 0, 0])):
        ids = h.ids(raw)
        want = (ids % np.array(size, np.uint64)).astype(np.int64) + np.array(start)
        assert np.array_equal(h.rows(ids), want)
        assert np.array_equal(h.keys(raw), want)


def test_line_utilities(tmp_path):
    p = write(tmp_path, "a\nbb\n\nccc\nd")
    assert count_lines(p) == 5
    assert line_offsets(p, np.array([0, 2, 4, 5])).tolist() == [0, 5, 10, 11]
    files = [p, write(tmp_path, "x\ny\n", "e.txt")]
    for parts in range(1, 8):
        pieces = [piece for part in split_inputs(files, parts) for piece in part]
        text = b"".join(files[q.file].read_bytes()[q.begin:q.end] for q in pieces)
        assert text == files[0].read_bytes() + files[1].read_bytes()


def test_epoch_order_in_blocks_keeps_each_block_together():
    """With blocks, a block's batches come one after another (one read for a file
    reader), blocks and batches inside them both shuffled."""
    order = epoch_order(1000, 2, 7, 1, block=128)
    assert sorted(order) == list(range(1000))
    block = order // 128
    assert np.count_nonzero(np.diff(block)) == 7          # 8 blocks, each in one piece
    assert list(dict.fromkeys(block.tolist())) != list(range(8))   # blocks shuffled
    assert not np.array_equal(order[block == block[0]], np.sort(order[block == block[0]]))
