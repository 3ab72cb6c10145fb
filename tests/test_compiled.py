"""The compiled parsers against the reference parser, bit for bit: on every text data set
of the tests, good lines and broken ones mixed, the same ids, values, labels and present
fields, the same skip counts and the same first error; and their number scanners against
Python's ``int`` / ``float``, NumPy's buckets and ``hashlib``."""
import hashlib

import numpy as np
import pytest

from mpips.data.blake2 import blake2b64
from mpips.data.criteo import CriteoFormat
from mpips.data.csvdata import CsvFormat, CsvSchema, category_id
from mpips.data.hashing import bucketize
from mpips.data.libsvm import LibSVMFormat
from mpips.data.parse import parse_bytes, parse_reference
from mpips.data.scan import OK, SLOW, count_raw, line_bounds, scan_float
from mpips.data.unlabeled import csv_without_label, without_label
from mpips.errors import DataError
from textdata import KAGGLE, criteo_text, libsvm_text

ROW = "1\t" + "\t".join(["5"] * 13) + "\t" + "\t".join(["68fd1e64"] * 26)
CRITEO_ODD = [  # bad lines, and valid spellings outside the kernel's plain subset
    "", "1\t2\t3", ROW.replace("1", "2", 1), ROW.replace("\t5\t", "\tx5\t", 1),
    ROW.replace("68fd1e64", "zz", 1), ROW.replace("68fd1e64", "-1a", 1),
    ROW.replace("\t5\t", "\t99999999999999999999\t", 1), ROW[:-8] + "ffffffffffffffff",
    ROW[:-8] + "1ffffffffffffffff", ROW.replace("\t5\t", "\t+5\t", 1),
    ROW.replace("\t5\t", "\t 5\t", 1), ROW.replace("\t5\t", "\t1_0\t", 1),
    ROW.replace("\t5\t", "\t-\t", 1), ROW.replace("\t5\t", "\t-0\t", 1),
    ROW.replace("\t5\t", "\t\u0663\t", 1), ROW.replace("68fd1e64", "0x1a", 1),
    ROW.replace("68fd1e64", "68FD1E64", 1), ROW.replace("68fd1e64", "", 1),
    ROW.replace("\t5\t", "\t-7\t", 1), ROW.replace("\t5\t", "\t123456789012345678\t", 1),
    ROW.replace("\t5\t", "\t-123456789012345678\t", 1),
    ROW.replace("\t5\t", "\t9223372036854775808\t", 1), ROW + "\t", ROW + "\r",
    ROW.replace("\t5\t", "\t\t", 1), "0\t" + "\t" * 38, ROW.replace("\t", " ", 1),
    ROW.replace("68fd1e64", "é", 1), "1", "1\t", "\t" + ROW[2:],
]
LIBSVM_ODD = [
    "", "   ", "1 3:1 x1 4:2", "1 3:1 -4:2", "1 3:nan", "1 3:inf", "2 3:1", "+1 3:0.5 7:2",
    "-1 7:1", "0 3:1 7:1 9:4", "1.0 9:1", "1e0 3:1", "-0 3:1", ".1e1 3:1", "1_0 3:1",
    "1 3:1e400", "1 3:1e-400", "1 3:1.2345678901234567", "1 3:0.1234567890123456789",
    "1 3:12345678901234567890123", "1 18446744073709551615:1", "1 18446744073709551616:1",
    "1 00000000000000000000003:1", "1 3:.5 4:5. 5:+.5e-3 6:-0", "1 3::1", "1 :1", "1 3:",
    "1 3:1:2", "1\t3:1\t\t4:2 ", "1 3:1\x0b4:2", "1 3:1\xa04:2", "1 3:0x1", "1 3:1_0",
    "1 +3:1", "1 3:9007199254740993", "1 3:1e22", "1 3:123456789012345678e-5",
    "1 3:1e-22", "1 3:4e-23", "1 3:3.4028236e38", "1 3:1e39", "1 3:1E5", "1 3:1e+05",
    "1 3:1e123456", "1 1:1 2:1 3:1 4:1 5:1 6:1 7:1 8:1",
]
FFM_ODD = ["1 0:5:1 1:5:0.5", "0 1:5:1", "1 0:5", "1 0:5:1:2", "1 a:5:1", "1 0:5:x",
           "1 18446744073709551615:0:1", "0 3:1:1.5e-3", "1 0:5:1.12345678901234567"]
HEADER = ["id", "site", "age", "clicked", "ad", "price"]
CSV_CELLS = {
    "id": ["1", "x", ""], "site": ["a.com", "b", "", "\u00e9", "\xa0x", " a ", "\u4e2d"],
    "age": ["30", "", "1e3", " 4 ", "0", "-0.5", "0.7071067811865476", "x", "nan", "1e400",
            "1.4142135623730951", "12345678901234567890", "0.1234567890123456789", "4",
            "2e-300", "8.0", "\t7", "1_0"],
    "clicked": ["1", "0", "true", "FALSE", "-1", "+1", "2", "yes", " 1 ", "1.0", "1e0"],
    "ad": ["q", "", "zz", '"q"', '"a,b"', '"x', "a\x00b"], "price": ["1", "2.5", "", "3.25e2"]}


def csv_text(rows: int, seed: int, delim: str = ",") -> str:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(rows):
        cells = [str(rng.choice(CSV_CELLS[h])) for h in HEADER]
        lines.append(delim.join(cells[:-1] if rng.random() < 0.03 else cells))
    return "\n".join(lines) + "\n"


def mixed(good: str, odd: list[str], seed: int, end: str = "\n") -> bytes:
    """Good lines with the odd ones spread among them (some twice), CRLF on some."""
    rng = np.random.default_rng(seed)
    lines = good.splitlines() + odd + odd[::3]
    rng.shuffle(lines)
    ends = np.where(rng.random(len(lines)) < 0.1, "\r\n", "\n")
    return ("".join(f"{x}{e}" for x, e in zip(lines, ends))[:-1] + end).encode()


def same(fmt, data: bytes, seed: int = 3) -> int:
    """Compiled and reference parse of ``data``: equal rows and skip counts, and the same
    first error; returns the number of bad lines."""
    ref, ref_bad = parse_reference(fmt, data, seed, "f.txt", 7, "skip")
    got, got_bad = parse_bytes(fmt, data, seed, "f.txt", 7, "skip")
    assert got_bad == ref_bad
    for name in ("ids", "vals", "labels", "present"):
        a, b = getattr(ref, name), getattr(got, name)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), name   # bit for bit
    errors = []
    for parse in (parse_reference, parse_bytes):
        try:
            parse(fmt, data, seed, "f.txt", 7)
            errors.append(None)
        except DataError as exc:
            errors.append(str(exc))
    assert errors[0] == errors[1] and (errors[0] is None) == (ref_bad == 0)
    return ref_bad


@pytest.mark.parametrize("end", ["\n", ""])
def test_criteo(end):
    assert same(CriteoFormat(), mixed(criteo_text(400), CRITEO_ODD, 1, end)) > 10
    assert same(CriteoFormat(), criteo_text(300, 5).encode()) == 0


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")   # 1e39 -> float32 inf
@pytest.mark.parametrize("end", ["\n", ""])
def test_libsvm_and_libfm(end):
    assert same(LibSVMFormat(6), mixed(libsvm_text(400), LIBSVM_ODD, 2, end)) > 10
    assert same(LibSVMFormat(9), libsvm_text(300, 5).encode()) == 0


def test_libffm():
    rng = np.random.default_rng(4)
    good = "\n".join(" ".join([str(rng.integers(0, 2)), *(
        f"{rng.integers(0, 5)}:{rng.integers(0, 99)}:{rng.random():.{rng.integers(1, 19)}f}"
        for _ in range(rng.integers(0, 5)))]) for _ in range(300))
    assert same(LibSVMFormat(4, ffm=True), mixed(good, FFM_ODD + LIBSVM_ODD[:9], 3)) > 5


@pytest.mark.parametrize("delim", [",", ";", "\t", "|"])
def test_csv(delim):
    schema = CsvSchema("clicked", ("age", "price"), ("site", "ad"), delim)
    assert same(CsvFormat(schema, HEADER), csv_text(1500, 6, delim).encode()) > 10


def test_csv_with_a_delimiter_the_kernel_leaves_alone():
    """A quote as the delimiter: every line goes through the reference."""
    schema = CsvSchema("clicked", ("age",), ("site",), '"')
    same(CsvFormat(schema, ["site", "age", "clicked"]), b'a"3"1\nb"x"0\n')


def unlabeled_lines(data: bytes, drop: str) -> bytes:
    """The lines without their label: up to the first ``drop`` (Criteo, libSVM), or
    without the CSV label column (the fourth)."""
    out = []
    for line in data.decode().split("\n"):
        if drop == ",":
            cells = line.split(",")
            out.append(",".join(cells[:3] + cells[4:]))
        else:
            out.append(line.split(drop, 1)[1] if drop in line else line)
    return "\n".join(out).encode()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")   # 1e39 -> float32 inf
@pytest.mark.parametrize("kind", ["criteo", "libsvm", "csv"])
def test_lines_without_labels(kind):
    """Lines that lack their label (data to score) through the kernels, with CRLF ends
    and broken lines mixed in: the same rows and errors as the reference, and the kernel
    (not the reference) takes most lines."""
    if kind == "criteo":
        fmt = without_label(CriteoFormat())
        data = unlabeled_lines(mixed(criteo_text(300), CRITEO_ODD, 7), "\t")
    elif kind == "libsvm":
        fmt = without_label(LibSVMFormat(6))
        data = unlabeled_lines(mixed(libsvm_text(300), LIBSVM_ODD, 8), " ")
    else:
        schema = CsvSchema("clicked", ("age", "price"), ("site", "ad"), ",")
        fmt = csv_without_label(schema, [h for h in HEADER if h != "clicked"])
        data = unlabeled_lines(csv_text(600, 9).encode(), ",")
    same(fmt, data)
    same(fmt, data.replace(b"\n", b"\r\n"))
    buf = np.frombuffer(data, np.uint8)
    _, taken = fmt.compiled(buf, *line_bounds(buf), 3)
    assert taken.mean() > (0.25 if kind == "csv" else 0.8)   # csv_text is mostly odd cells


@pytest.mark.parametrize("make", [criteo_text, libsvm_text])
def test_the_readers_test_files(make):
    """The seeded files the reader, prep and training tests use, and the rows of
    tests/test_readers.py."""
    fmt = CriteoFormat() if make is criteo_text else LibSVMFormat(6)
    for seed in (0, 1, 2, 5):
        same(fmt, make(500, seed).encode())
    same(LibSVMFormat(3), b"+1 3:0.5 7:2\r\n-1 7:1\n0 3:1 7:1 9:4\n1.0 9:1")
    same(LibSVMFormat(2), b"1 1:1\nbad\n0 2:1\n1 1:1 2:x\n1 3:1\n0 1:1\n")
    same(LibSVMFormat(3, ffm=True), b"1 0:5:1 1:5:0.5\n0 1:5:1\n1 0:5:1 1:6:1 2:7:1\n")


@pytest.mark.skipif(not KAGGLE.exists(), reason="shared Criteo sample not present")
def test_kaggle_sample():
    assert same(CriteoFormat(), KAGGLE.read_bytes(), seed=0) == 0


def test_scan_float_is_pythons_float():
    """Random decimal spellings: OK ones equal ``float`` bit for bit (and as float32);
    SLOW ones are valid for ``float``."""
    rng = np.random.default_rng(7)
    texts = ["0", "-0", "1", "1.", ".5", "+.5e-3", "1e22", "1e23", "9007199254740993"]
    for _ in range(20000):
        digits = "".join(rng.choice(list("0123456789"), rng.integers(1, 22)))
        dot = int(rng.integers(0, len(digits) + 1))
        t = digits[:dot] + "." + digits[dot:] if rng.random() < 0.7 else digits
        if rng.random() < 0.3:
            t += f"e{rng.integers(-30, 30)}"
        texts.append(("-" if rng.random() < 0.2 else "") + t)
    kinds = set()
    for t in texts:
        buf = np.frombuffer(t.encode(), np.uint8)
        status, v = scan_float(buf, 0, buf.size)
        kinds.add(status)
        if status == OK:
            assert np.float64(v).tobytes() == np.float64(float(t)).tobytes(), t
            assert np.float32(v).tobytes() == np.float32(float(t)).tobytes(), t
        else:
            assert status == SLOW, t
            float(t)
    assert kinds == {OK, SLOW}


def test_count_buckets_are_numpys():
    """Every count up to 2**16, powers of two and their neighbours up to 2**62, and the
    half-octave boundaries: the kernel's bucket equals ``bucketize`` or is left to it."""
    v = [np.arange(-1000, 1 << 16)]
    p = 2 ** np.arange(2, 63, dtype=np.int64)
    half = np.round(2 ** (np.arange(5, 125) / 2)).astype(np.int64)
    counts = np.concatenate(v + [p - 1, p, p + 1, half - 1, half, half + 1])
    want = (bucketize(counts) + (1 << 32)).astype(np.uint64)
    for c, w in zip(counts, want):
        sure, raw = count_raw(np.int64(c))
        assert not sure or raw == w, c


def test_blake2b64_is_hashlibs():
    rng = np.random.default_rng(8)
    for n in [*range(0, 300), 1000, 4096]:
        data = rng.integers(0, 256, n).astype(np.uint8)
        want = int.from_bytes(hashlib.blake2b(data.tobytes(), digest_size=8).digest(),
                              "little")
        assert int(blake2b64(data, 0, n, np.empty(40, np.uint64))) == want
    text = "caf\u00e9 \u4e2d"
    buf = np.frombuffer(text.encode(), np.uint8)
    assert int(blake2b64(buf, 0, buf.size, np.empty(40, np.uint64))) == category_id(text)
