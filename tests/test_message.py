"""The push message's byte layout: round trips, views, and buffers that break it."""
import numpy as np
import pytest

from mpips.errors import ProtocolError
from mpips.message import FLAG_LAST, PushMessage, TablePart, decode, encode, mark

DIMS = [3, 1, 17]


def sample() -> PushMessage:
    rng = np.random.default_rng(0)
    parts = []
    for i, d in enumerate(DIMS):
        n = [5, 0, 2][i]
        parts.append(TablePart(i, 10 + i, rng.integers(0, 99, n), rng.normal(size=(n, d))
                               .astype(np.float32)))
    return PushMessage(worker=2, step=41, flags=FLAG_LAST, epoch=3, parts=parts)


def test_round_trip_gives_every_field_and_row():
    msg = sample()
    got = decode(encode(msg, DIMS), DIMS)
    assert (got.worker, got.step, got.flags, got.epoch) == (2, 41, FLAG_LAST, 3)
    assert got.last and not got.mark and got.rows == msg.rows == 7
    for a, b in zip(msg.parts, got.parts):
        assert (a.table, a.version) == (b.table, b.version)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        np.testing.assert_array_equal(a.rows, b.rows)


def test_decoded_parts_are_views_of_the_buffer():
    buf = encode(sample(), DIMS)
    got = decode(buf, DIMS)
    assert np.shares_memory(got.parts[0].rows, buf) and np.shares_memory(got.parts[2].offsets,
                                                                       buf)


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


def test_a_mark_has_no_parts():
    got = decode(encode(mark(1, 30, 2), DIMS), DIMS)
    assert got.mark and got.step == 30 and got.epoch == 2 and got.parts == []


@pytest.mark.parametrize("damage", ["short", "magic", "truncated", "table", "longer"])
def test_broken_buffers_are_protocol_errors(damage):
    buf = encode(sample(), DIMS)
    if damage == "short":
        buf = buf[:20]
    elif damage == "magic":
        buf = buf.copy()
        buf[0] ^= 1
    elif damage == "truncated":
        buf = buf[:-4]
    elif damage == "table":
        buf = buf.copy()
        buf[48:56].view(np.int64)[0] = 9       # the first part names table 9
    else:
        buf = np.concatenate([buf, np.zeros(8, np.uint8)])
    with pytest.raises(ProtocolError):
        decode(buf, DIMS)
