"""The push message's byte layout: round trips per codec, views, sizes, and buffers that
break it."""
import numpy as np
import pytest

from mpips.codecs import BF16, FP16, INT8, RAW, encode_rows, round_trip
from mpips.errors import ProtocolError
from mpips.message import (FLAG_LAST, PushMessage, TablePart, decode, encode, float32_bytes,
                           mark, part_bytes)

DIMS = [3, 1, 17]


def sample(codec: int = RAW) -> tuple[PushMessage, list[np.ndarray]]:
    """A message of three tables (one empty) and the float32 rows it carries."""
    rng = np.random.default_rng(0)
    parts, rows = [], []
    for i, d in enumerate(DIMS):
        n = [5, 0, 2][i]
        offsets = np.sort(rng.choice(1000, n, replace=False))
        r = rng.normal(size=(n, d)).astype(np.float32)
        rows.append(r)
        parts.append(TablePart(i, 10 + i, offsets, r if codec == RAW else encode_rows(codec, r),
                               codec=codec))
    return PushMessage(worker=2, step=41, flags=FLAG_LAST, epoch=3, parts=parts), rows


@pytest.mark.parametrize("codec", [RAW, FP16, BF16, INT8])
def test_round_trip_gives_every_field_and_the_decoded_rows(codec):
    """Every field comes back; rows come back as the codec decodes them (raw: exactly)."""
    msg, rows = sample(codec)
    got = decode(encode(msg, DIMS), DIMS)
    assert (got.worker, got.step, got.flags, got.epoch) == (2, 41, FLAG_LAST, 3)
    assert got.last and not got.mark and got.rows == msg.rows == 7
    for a, b, r in zip(msg.parts, got.parts, rows):
        assert (a.table, a.version, a.codec) == (b.table, b.version, b.codec)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        assert b.rows.dtype == np.float32
        np.testing.assert_array_equal(b.rows, round_trip(codec, r)[1])


def test_raw_rows_are_views_of_the_buffer():
    buf = encode(sample()[0], DIMS)
    got = decode(buf, DIMS)
    assert np.shares_memory(got.parts[0].rows, buf)


def test_order_picks_the_rows_while_packing():
    """A part with ``order`` carries rows[order], as routing to a server needs."""
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    order = np.array([3, 0])
    msg = PushMessage(0, 0, 0, 0, [TablePart(0, 0, np.array([7, 8]), rows, order),
                                  TablePart(1, 0, np.empty(0, np.int64),
                                            np.empty((0, 1), np.float32)),
                                  TablePart(2, 0, np.empty(0, np.int64),
                                            np.empty((0, 17), np.float32))])
    got = decode(encode(msg, DIMS), DIMS)
    np.testing.assert_array_equal(got.parts[0].rows, rows[order])


def test_keys_are_delta_coded_and_sizes_are_reported():
    """1,000 offsets 3 apart cost a byte each plus 4 for the value, against 12 uncoded;
    ``part_bytes`` adds up to the buffer with the header."""
    offsets = np.arange(1000, dtype=np.int64) * 3 + 5
    rows = np.ones((1000, 1), np.float32)
    msg = PushMessage(0, 0, 0, 0, [TablePart(0, 0, np.empty(0, np.int64),
                                             np.empty((0, 3), np.float32)),
                                  TablePart(1, 0, offsets, rows),
                                  TablePart(2, 0, np.empty(0, np.int64),
                                            np.empty((0, 17), np.float32))])
    buf = encode(msg, DIMS)
    sizes = part_bytes(buf, DIMS)
    assert [(t, n, k) for t, n, k, _ in sizes] == [(0, 0, 0), (1, 1000, 1000), (2, 0, 0)]
    assert buf.size == 48 + sum(b for *_, b in sizes)
    assert buf.size == 48 + 3 * 56 + 1000 + 4000
    assert float32_bytes([0, 1000, 0], DIMS) == 48 + 3 * 32 + 1000 * 12


def test_unsorted_offsets_are_a_bug_not_a_message():
    msg = PushMessage(0, 0, 0, 0, [TablePart(0, 0, np.array([5, 2]),
                                             np.zeros((2, 3), np.float32))])
    with pytest.raises(ValueError):
        encode(msg, DIMS)


def test_a_mark_has_no_parts():
    got = decode(encode(mark(1, 30, 2), DIMS), DIMS)
    assert got.mark and got.step == 30 and got.epoch == 2 and got.parts == []


def test_the_same_message_gives_the_same_bytes():
    for codec in (RAW, FP16, BF16, INT8):
        assert np.array_equal(encode(sample(codec)[0], DIMS), encode(sample(codec)[0], DIMS))


def test_sightings_come_back_apart_from_the_rows():
    """Sightings travel with or without rows: offsets and counts come back as they were,
    a count of one costs a byte (and so does a key here), and a count below one is a bug."""
    seen, counts = np.array([3, 9, 10, 700]), np.array([1, 130, 2, 1])
    msg, _ = sample()
    msg.parts[0].seen, msg.parts[0].seen_counts = seen, counts
    msg.parts[1].seen, msg.parts[1].seen_counts = np.array([4]), np.array([6])
    buf = encode(msg, DIMS)
    got = decode(buf, DIMS)
    np.testing.assert_array_equal(got.parts[0].seen, seen)
    np.testing.assert_array_equal(got.parts[0].seen_counts, counts)
    assert got.parts[1].seen.tolist() == [4] and got.parts[1].seen_counts.tolist() == [6]
    assert len(got.parts[1]) == 0 and got.parts[2].seen.size == 0
    np.testing.assert_array_equal(got.parts[0].rows, msg.parts[0].rows)
    plain = encode(sample()[0], DIMS)
    # Part 0: keys 1+1+1+2 bytes, sums 1+2+1+1 bytes (10 bytes -> 16); part 1: 2 -> 8.
    assert buf.size - plain.size == 16 + 8
    msg.parts[0].seen_counts = np.array([1, 0, 2, 1])
    with pytest.raises(ValueError):
        encode(msg, DIMS)


@pytest.mark.parametrize("damage", ["short", "magic", "truncated", "table", "longer",
                                    "codec", "keys", "sightings"])
def test_broken_buffers_are_protocol_errors(damage):
    buf = encode(sample()[0], DIMS).copy()
    if damage == "short":
        buf = buf[:20]
    elif damage == "magic":
        buf[0] ^= 1
    elif damage == "truncated":
        buf = buf[:-4]
    elif damage == "table":
        buf[48:56].view(np.int64)[0] = 9       # the first part names table 9
    elif damage == "codec":
        buf[72:80].view(np.int64)[0] = 7       # the first part's codec
    elif damage == "keys":
        start = 48 + 3 * 56
        buf[start:start + 5] = 0x80            # varints that never end
    elif damage == "sightings":
        buf[88:96].view(np.int64)[0] = 1       # the first part claims one sighting
    else:
        buf = np.concatenate([buf, np.zeros(8, np.uint8)])
    with pytest.raises(ProtocolError):
        decode(buf, DIMS)
