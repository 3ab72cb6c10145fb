"""Data sources: deterministic synthetic rows, the Criteo TSV reader, sharing of rows."""

import numpy as np
import pytest

from mpips.config import TrainConfig
from mpips.data import share
from mpips.data.criteo import CriteoFormat
from mpips.data.hashing import FieldHashing, bucketize
from mpips.data.lines import count_lines
from mpips.data.plan import plan_data
from mpips.data.synthetic import SyntheticCTR
from mpips.data.textsource import TextSource
from mpips.errors import DataError
from mpips.metrics import auc
from textdata import KAGGLE



def criteo(path, table_rows):
    """A Criteo TSV file as a source, hashed into ``table_rows`` buckets."""
    return TextSource(path, CriteoFormat(), FieldHashing(table_rows))


def test_synthetic_rows_do_not_depend_on_who_generates_them():
    ds = SyntheticCTR(rows=3000, hashing=FieldHashing(1 << 16, 3), seed=3)
    whole = ds.batch(0, 3000)
    parts = [ds.batch(a, b) for a, b in ((0, 1000), (1000, 2200), (2200, 3000))]
    assert np.array_equal(whole.keys, np.concatenate([p.keys for p in parts]))
    assert np.array_equal(whole.labels, np.concatenate([p.labels for p in parts]))
    other = SyntheticCTR(rows=3000, hashing=FieldHashing(1 << 16, 4), seed=4).batch(0, 3000)
    assert not np.array_equal(whole.keys, other.keys)


def test_synthetic_shape_and_oracle():
    ds = SyntheticCTR(rows=20000, seed=1)
    b = ds.batch(0, 20000)
    assert b.keys.shape == (20000, 39) and b.keys.min() >= 0
    assert b.keys.max() < ds.hashing.total_rows
    assert 0.15 < b.labels.mean() < 0.45
    assert 0.70 < auc(b.labels, b.true_p) < 0.80      # the printed best achievable AUC
    top = np.bincount(b.keys[:, -1]).max() / 20000     # Zipf: the top category is common
    assert top > 0.2


# Distinct keys per batch of the Criteo Kaggle sample (default hashing, 2**21 rows): the
# mean over its whole batches of 1,024 rows, and its first 4,096 rows.
KAGGLE_KEYS_PER_BATCH = {1024: 8206, 4096: 22847}


def test_synthetic_keys_per_batch_are_like_real_logs():
    """The generator's skew is calibrated: distinct keys per batch within 20 % of the
    Kaggle sample's at 1,024 and 4,096 rows (the old Zipf(1.5) data had 2,395 and 4,781)."""
    ds = SyntheticCTR(rows=40_000)
    for rows, real in KAGGLE_KEYS_PER_BATCH.items():
        found = np.mean([np.unique(ds.batch(a, a + rows).keys).size
                         for a in range(0, 40_000 - rows + 1, 8192)])
        assert 0.8 * real <= found <= 1.2 * real, (rows, found, real)


@pytest.mark.skipif(not KAGGLE.exists(), reason="shared Criteo sample not present")
def test_kaggle_keys_per_batch():
    """The figures the calibration test holds the generator to."""
    src = criteo(KAGGLE, 1 << 21)
    per_1024 = [np.unique(b.keys).size for b in src.batches(0, 7168, 1024)]
    assert round(np.mean(per_1024)) == KAGGLE_KEYS_PER_BATCH[1024]
    assert np.unique(next(src.batches(0, 4096, 4096)).keys).size == KAGGLE_KEYS_PER_BATCH[4096]


def test_share_covers_rows_once():
    for n, parts in ((10, 3), (7, 7), (2, 5), (1000, 4)):
        ranges = [share(5, 5 + n, i, parts) for i in range(parts)]
        assert ranges[0][0] == 5 and ranges[-1][1] == 5 + n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_fields_with_their_own_buckets():
    """[fields.C1] buckets = 7 gives C1 its own 7 rows after the shared range."""
    raw = np.random.default_rng(0).integers(0, 10**6, (500, 3)).astype(np.uint64)
    h = FieldHashing(1000, 0, (0, 7, 0))
    k = h.keys(raw)
    assert h.total_rows == 1007
    assert set(np.unique(k[:, 1])) <= set(range(1000, 1007)) and len(np.unique(k[:, 1])) == 7
    assert (k[:, [0, 2]] < 1000).all()
    assert np.array_equal(k[:, [0, 2]], FieldHashing(1000).keys(raw)[:, [0, 2]])


def test_bucketize_and_hashing():
    assert bucketize(np.array([-1, 0, 3, 4, 1000])).tolist() == [-1, 0, 3, 6, 21]
    raw = np.array([[1, 1], [2, 1]], dtype=np.uint64)
    k = FieldHashing(1000).keys(raw)
    assert k[0, 1] == k[1, 1] and k[0, 0] != k[0, 1] and (k < 1000).all()


def _write(tmp_path, lines, name="d.tsv"):
    p = tmp_path / name
    p.write_text("".join(lines))
    return p


ROW = "1\t" + "\t".join(["5"] * 13) + "\t" + "\t".join(["68fd1e64"] * 26)


def test_criteo_reader_missing_fields_crlf_and_no_final_newline(tmp_path):
    empty = "0\t" + "\t" * 38
    p = _write(tmp_path, [ROW + "\r\n", empty + "\n", ROW])
    src = criteo(p, 1 << 20)
    assert src.rows == 3
    (b,) = list(src.batches(0, 3, 10))
    assert b.labels.tolist() == [1, 0, 1]
    assert np.array_equal(b.keys[0], b.keys[2]) and not np.array_equal(b.keys[0], b.keys[1])


def test_criteo_reader_row_ranges(tmp_path):
    p = _write(tmp_path, [ROW.replace("\t5\t", f"\t{i}\t", 1) + "\n" for i in range(10)])
    src = criteo(p, 1 << 20)
    all_keys = np.concatenate([b.keys for b in src.batches(0, 10, 3)])
    part = np.concatenate([b.keys for b in src.batches(4, 7, 2)])
    assert np.array_equal(all_keys[4:7], part)


@pytest.mark.parametrize("line,msg", [
    ("1\t2\t3\n", "expected 40 TAB-separated columns, found 3"),
    (ROW.replace("1", "2", 1) + "\n", "label '2' is not 0 or 1"),
    (ROW.replace("\t5\t", "\tx5\t", 1) + "\n", "column 2 'x5' is not a 64-bit integer count"),
    (ROW.replace("68fd1e64", "zz", 1) + "\n", "column 15 'zz' is not a hex category"),
    (ROW.replace("68fd1e64", "-1a", 1) + "\n", "column 15 '-1a' is not a hex category"),
    (ROW.replace("\t5\t", "\t99999999999999999999\t", 1) + "\n",
     "column 2 '99999999999999999999' is not a 64-bit integer count"),
])
def test_criteo_bad_line_names_file_and_line(tmp_path, line, msg):
    p = _write(tmp_path, [ROW + "\n", line])
    with pytest.raises(DataError, match=f"d.tsv:2: {msg}"):
        list(criteo(p, 1000).batches(0, 2, 10))


def test_negative_count_is_not_missing(tmp_path):
    """I2 = -1 is common in Criteo; it must hash apart from an empty field."""
    neg = ROW.replace("\t5\t", "\t-1\t", 1)
    empty = ROW.replace("\t5\t", "\t\t", 1)
    src = criteo(_write(tmp_path, [neg + "\n", empty + "\n"]), 1 << 30)
    (b,) = list(src.batches(0, 2, 9))
    assert b.keys[0, 0] != b.keys[1, 0] and (b.keys[0, 1:] == b.keys[1, 1:]).all()


def test_wrong_format_fails_when_opened(tmp_path):
    """A CSV given as criteo is refused up front, before any rank starts work."""
    with pytest.raises(DataError, match=r"x.csv:1: expected 40 TAB-separated columns"):
        criteo(_write(tmp_path, ["label,a,b\n", "1,2,3\n"], "x.csv"), 10)


def test_plan_needs_train_and_test_rows(tmp_path):
    with pytest.raises(DataError, match="no test rows"):
        plan_data(TrainConfig(synthetic_rows=3))
    with pytest.raises(DataError, match=r"d.tsv: no test rows"):
        plan_data(TrainConfig(data=str(_write(tmp_path, [ROW + "\n"]))))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        criteo(tmp_path / "nope.tsv", 10)
    with pytest.raises(DataError, match="is empty"):
        criteo(_write(tmp_path, []), 10)
    assert count_lines(_write(tmp_path, ["a\nb"], "x")) == 2


def test_plan_holds_out_the_last_rows(tmp_path):
    p = _write(tmp_path, [ROW + "\n"] * 10)
    plan = plan_data(TrainConfig(data=str(p), test_fraction=0.2, val_fraction=0))
    assert plan.train_range == (0, 8) and plan.test_range == (8, 10)
    syn = plan_data(TrainConfig(synthetic_rows=1000))     # a tenth of the rest validates
    assert syn.train_range == (0, 720) and syn.test_range == (800, 1000)
    assert syn.val_range == (720, 800)


@pytest.mark.skipif(not KAGGLE.exists(), reason="shared Criteo sample not present")
def test_kaggle_sample_parses():
    src = criteo(KAGGLE, 1 << 20)
    assert src.rows == 8000
    labels = np.concatenate([b.labels for b in src.batches(0, 8000, 4096)])
    assert labels.sum() == 1728
