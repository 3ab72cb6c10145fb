"""Push codecs: each decodes within its error bound, the rounding it drops is exact in
float32 (so error feedback keeps it whole), the same rows give the same bytes, and keys
round-trip through their varints."""
import numpy as np
import pytest

from mpips.codecs import (BF16, FP16, INT8, RAW, Compression, decode_keys, decode_rows,
                          encode_keys, encode_rows, round_trip, row_bytes,
                          pull_codec, send_rows)
from mpips.errors import ConfigError, ProtocolError
from mpips.models import NOT_ADMITTED, not_admitted
from mpips.pullcodec import code_mirror, code_pulled, decode_pulled

CODECS = [RAW, FP16, BF16, INT8]


def rows_of_every_scale(seed: int = 0) -> np.ndarray:
    """Gradient-like rows over 12 orders of magnitude, with zero, constant, one-sided and
    tiny rows among them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 17)) * 10.0 ** rng.uniform(-9, 3, size=(2000, 1))
    x[0] = 0
    x[1] = 3.25
    x[2] = np.abs(x[2]) + 100
    x[3, :8] = 1e-30
    x[4] = -7e-6
    return x.astype(np.float32)


@pytest.mark.parametrize("codec", CODECS)
def test_decoding_is_within_the_codecs_bound(codec):
    """none: exact; fp16: half an ulp of an 11-bit significand (or 2**-25 absolutely, in
    its subnormal range); bf16: half an ulp of 8 bits; int8: half a step of a row's scale,
    which is at most its span / 127 or its largest magnitude / 16,000."""
    x = rows_of_every_scale()
    _, got = round_trip(codec, x)
    err = np.abs(got.astype(np.float64) - x)
    mag = np.abs(x.astype(np.float64))
    if codec == RAW:
        assert np.array_equal(got, x)
    elif codec == FP16:
        assert np.all(err <= np.maximum(mag * 2.0 ** -11, 2.0 ** -25))
    elif codec == BF16:
        assert np.all(err <= mag * 2.0 ** -8)
    else:
        span = x.max(axis=1).astype(np.float64) - x.min(axis=1)
        step = np.maximum(2 * span / 254, 2 * np.abs(x).max(axis=1) / 32000)
        assert np.all(err <= step[:, None] / 2 + 1e-45)


@pytest.mark.parametrize("codec", CODECS)
def test_what_rounding_drops_is_exact_in_float32(codec):
    """``x - decode(encode(x))`` computed in float32 is the exact difference, so a
    residual plus what was sent gives back x, bit for bit."""
    for seed in range(3):
        x = rows_of_every_scale(seed)
        _, got = round_trip(codec, x)
        residual = x - got
        assert np.array_equal(residual.astype(np.float64) + got.astype(np.float64),
                              x.astype(np.float64))


@pytest.mark.parametrize("codec", CODECS)
def test_the_same_rows_give_the_same_bytes(codec):
    x = rows_of_every_scale()
    a, b = encode_rows(codec, x), encode_rows(codec, x.copy())
    assert a.shape == (x.shape[0], row_bytes(codec, 17)) and np.array_equal(a, b)
    assert np.array_equal(decode_rows(codec, a, 17), decode_rows(codec, b.copy(), 17))


def test_rounding_is_to_nearest_even():
    """Deterministic rounding, no randomness: ties go to the even code."""
    ties = np.array([[1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11]], np.float32)
    np.testing.assert_array_equal(round_trip(FP16, ties)[1], [[1.0, 1 + 2 * 2.0 ** -10]])
    ties = np.array([[1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8]], np.float32)
    np.testing.assert_array_equal(round_trip(BF16, ties)[1], [[1.0, 1 + 2 * 2.0 ** -7]])


def test_int8_rows_are_three_bytes_and_a_code_per_value():
    """A row of 16 embedding values and its weight travel in 20 bytes instead of 68; a
    power-of-two scale spans a row in at least half the codes."""
    assert [row_bytes(c, 17) for c in CODECS] == [68, 34, 34, 20]
    coded = encode_rows(INT8, np.linspace(-1, 1, 17, dtype=np.float32)[None])
    assert coded[0, 3] == 0 and coded[0, -1] >= 127


def test_out_of_range_values_are_clipped_not_infinite():
    got = round_trip(FP16, np.array([[1e6, -1e6]], np.float32))[1]
    np.testing.assert_array_equal(got, [[65504, -65504]])


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_keys_round_trip_through_varints(n):
    rng = np.random.default_rng(n)
    keys = np.sort(rng.choice(1 << 40, n, replace=False)).astype(np.int64)
    if n:
        keys[-1] = (1 << 62) - 1
    buf = encode_keys(keys)
    np.testing.assert_array_equal(decode_keys(buf, n, "test"), keys)


def test_dense_keys_cost_a_byte_each():
    assert encode_keys(np.arange(5000, dtype=np.int64) * 2).size == 5000
    assert encode_keys(np.arange(100, dtype=np.int64) * 1000).size == 1 + 99 * 2


def test_keys_must_increase_and_bytes_must_fit():
    with pytest.raises(ValueError):
        encode_keys(np.array([3, 3]))
    buf = encode_keys(np.array([1, 5, 900]))
    for bad in (buf[:-1], np.concatenate([buf, [0]]), np.full(11, 0xFF, np.uint8)):
        with pytest.raises(ProtocolError):
            decode_keys(bad, 3, "test")


def test_compression_names():
    assert Compression.parse("int8", 0.1, "x") == Compression(INT8)
    assert Compression.parse("topk", 0.25, "x") == Compression(RAW, 0.25)
    top = Compression.parse("topk+int8", 0.1, "x")
    assert top == Compression(INT8, 0.1) and top.name == "topk+int8" and top.lossy
    assert not Compression().lossy and Compression().name == "none"
    with pytest.raises(ConfigError, match="tables.features"):
        Compression.parse("zip", 0.1, "tables.features")
    with pytest.raises(ConfigError, match="compress-keep"):
        Compression.parse("topk", 0.0, "x")


def test_the_int8_kernel_equals_its_numpy_reference():
    from reference import int8_encode

    for seed in range(3):
        x = rows_of_every_scale(seed)
        coded = encode_rows(INT8, x)
        np.testing.assert_array_equal(coded, int8_encode(x))
        e = coded[:, 0].view(np.int8).astype(np.int64)
        z = coded[:, 1:3].copy().view(np.int16)[:, 0].astype(np.float64)
        expect = np.ldexp(coded[:, 3:].astype(np.float64) + z[:, None], e[:, None])
        np.testing.assert_array_equal(decode_rows(INT8, coded, 17), expect.astype(np.float32))


def every_kind_of_float32(n: int = 200_000, seed: int = 0) -> np.ndarray:
    """Random float32 bit patterns (every exponent: subnormals, halves' subnormal and
    overflow ranges, infinities, NaNs) and the exact ties of fp16 and bf16."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 1 << 19, size=n // 4, dtype=np.uint32) << np.uint32(13)) \
        | np.uint32(0x1000)
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x33000000,
                        0x33000001, 0x387FFFFF, 0x38800000, 0x477FE000, 0x477FF000],
                       np.uint32)
    return np.concatenate([bits, ties, special]).view(np.float32).reshape(-1, 1)


@pytest.mark.parametrize("codec", [FP16, BF16])
def test_the_half_kernels_equal_their_numpy_references(codec):
    """The fp16 and bf16 coders give NumPy's bits on every kind of float32; what they
    leave as the rest is the value minus NumPy's decoding, in float32."""
    from reference import bf16_encode, fp16_encode

    x = every_kind_of_float32()
    coded = encode_rows(codec, x).view(np.uint16)
    expect = (fp16_encode if codec == FP16 else bf16_encode)(x)
    np.testing.assert_array_equal(coded, expect)
    rest = x.copy()
    sent, kept = send_rows(codec, rest)
    assert np.array_equal(sent, coded.view(np.uint8))
    with np.errstate(invalid="ignore"):
        want = x - decode_rows(codec, sent, 1)
    np.testing.assert_array_equal(rest, want)
    assert kept == np.count_nonzero(want != 0)


def test_halves_decode_to_numpys_bits():
    """Every one of the 65,536 half bit patterns (subnormals, infinities, both zeros)
    decodes to the float32 bits NumPy's cast gives; NaNs to NaNs (a cast in hardware may
    quiet a signalling one)."""
    every = np.arange(1 << 16, dtype=np.uint16).reshape(-1, 64)
    got = decode_rows(FP16, every.view(np.uint8), 64)
    expect = every.view(np.float16).astype(np.float32)
    nan = np.isnan(expect)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], expect.view(np.uint32)[~nan])


@pytest.mark.parametrize("codec", CODECS)
def test_sending_leaves_exactly_what_rounding_took_off(codec):
    x = rows_of_every_scale(1)
    rest = x.copy()
    sent, kept = send_rows(codec, rest)
    np.testing.assert_array_equal(sent, encode_rows(codec, x))
    np.testing.assert_array_equal(rest, x - decode_rows(codec, sent, 17))
    assert kept == np.count_nonzero(np.any(rest != 0, axis=1))


@pytest.mark.parametrize("codec", [FP16, BF16, INT8])
def test_pulled_rows_decode_as_the_push_coders_round_trip(codec):
    """A mirror's records are the push codec's records, so a pulled row is within the
    codec's bound; a row not admitted comes back not admitted, the rows around it as
    coded, and the same rows give the same records."""
    x = rows_of_every_scale()
    x.view(np.uint32)[[5, 17]] = NOT_ADMITTED
    records = code_pulled(codec, x)
    assert records.shape == (x.shape[0], row_bytes(codec, x.shape[1]))
    got = decode_pulled(codec, records, x.shape[1])
    marked = not_admitted(got)
    assert np.flatnonzero(marked).tolist() == [5, 17]
    assert np.array_equal(got.view(np.uint32)[marked], x.view(np.uint32)[marked])
    keep = ~marked
    assert np.array_equal(got[keep], round_trip(codec, x[keep])[1])
    assert np.array_equal(code_pulled(codec, x.copy()), records)
    assert np.array_equal(code_pulled(codec, x[keep]), encode_rows(codec, x[keep]))


def test_pull_codec_names():
    assert [pull_codec(n, "--pull-codec") for n in ("none", "fp16", "bf16", "int8")] == \
        [RAW, FP16, BF16, INT8]
    with pytest.raises(ConfigError, match="tables.emb: pull-codec must be one of none"):
        pull_codec("topk", "tables.emb")


@pytest.mark.parametrize("codec", [FP16, BF16, INT8])
def test_a_mirror_is_coded_in_place_in_the_rows_named_only(codec):
    """A server codes the rows a step updated into its mirror where they are: those rows
    get their records (a row not admitted its mark), every other row stays as it was."""
    x = rows_of_every_scale()
    x.view(np.uint32)[7] = NOT_ADMITTED
    mirror = np.full((x.shape[0], row_bytes(codec, x.shape[1])), 0xAB, np.uint8)
    index = np.array([1999, 3, 7, 100])
    code_mirror(codec, x, mirror, index)
    assert np.array_equal(mirror[index], code_pulled(codec, x[index]))
    assert np.all(mirror[np.setdiff1d(np.arange(x.shape[0]), index)] == 0xAB)
    assert not_admitted(decode_pulled(codec, mirror[[7]], x.shape[1]))[0]
