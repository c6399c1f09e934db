import contextlib
import dataclasses
import datetime
import gc
import os
import struct
import threading
import tracemalloc
import uuid
from decimal import Decimal

import msgpack
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from redline.cache._codecs import (
    Codec,
    Compressor,
    JsonCodec,
    MsgpackCodec,
    PickleCodec,
    get_codec,
)
from redline.cache._exceptions import CodecError

MIB = 1 << 20

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    # JSON has no literal for infinities; orjson writes them as null.
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_like = st.recursive(
    json_scalars,
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)

fixed_offsets = st.builds(
    datetime.timezone,
    st.timedeltas(
        min_value=datetime.timedelta(hours=-23, minutes=-59),
        max_value=datetime.timedelta(hours=23, minutes=59),
    ),
)
msgpack_hashables = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.datetimes(timezones=st.none() | fixed_offsets)
    | st.dates()
    | st.times(timezones=st.none() | fixed_offsets)
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False)
)
msgpack_values = st.recursive(
    msgpack_hashables
    | st.sets(msgpack_hashables, max_size=5)
    | st.frozensets(msgpack_hashables, max_size=5),
    lambda children: (
        st.lists(children) | st.dictionaries(st.text() | st.integers() | st.binary(), children)
    ),
    max_leaves=30,
)


@dataclasses.dataclass
class Portfolio:
    owner: str
    holdings: dict[str, Decimal]


class Widget:
    pass


@given(json_like)
def test_msgpack_round_trips_json_like_data(value):
    codec = MsgpackCodec()
    assert codec.decode(codec.encode(value)) == value


@given(msgpack_values)
def test_msgpack_round_trips_bytes_big_ints_and_ext_types_nested(value):
    codec = MsgpackCodec()
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        -(2**200),
        10**100 + 7,
        b"\x00\xffbinary",
        datetime.datetime(2024, 2, 29, 13, 45, 6, 123456),
        datetime.date(1999, 12, 31),
        datetime.time(23, 59, 59, 999999),
        datetime.time(8, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
        datetime.timedelta(days=-3, seconds=7, microseconds=11),
        datetime.timedelta(days=999_999_999, seconds=86_399, microseconds=999_999),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("1234.50"),
        Decimal("-0.000000000000000000000000000001"),
        Decimal("Infinity"),
        {1, "a", b"b", 2**70},
        frozenset({Decimal("1.5"), uuid.UUID(int=7)}),
    ],
    ids=repr,
)
def test_msgpack_round_trips_each_ext_type_with_its_type(value):
    codec = MsgpackCodec()
    decoded = codec.decode(codec.encode(value))
    assert decoded == value
    assert type(decoded) is type(value)


def test_msgpack_keeps_aware_datetime_instant_offset_and_microseconds():
    offset = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    value = datetime.datetime(2024, 6, 1, 12, 0, 0, 1, tzinfo=offset)
    decoded = MsgpackCodec().decode(MsgpackCodec().encode(value))
    assert decoded == value
    assert decoded.utcoffset() == datetime.timedelta(hours=5, minutes=30)
    assert decoded.microsecond == 1


def test_msgpack_keeps_sub_second_utc_offsets():
    offset = datetime.timezone(datetime.timedelta(seconds=-3, microseconds=7))
    for value in (
        datetime.datetime(2000, 1, 1, tzinfo=offset),
        datetime.time(12, 0, tzinfo=offset),
    ):
        decoded = MsgpackCodec().decode(MsgpackCodec().encode(value))
        assert decoded.utcoffset() == offset.utcoffset(None)


def test_msgpack_keeps_naive_datetime_naive():
    value = datetime.datetime(2024, 6, 1, 12, 0, 0, 999999)
    decoded = MsgpackCodec().decode(MsgpackCodec().encode(value))
    assert decoded == value
    assert decoded.tzinfo is None


def test_msgpack_keeps_decimal_exponent():
    decoded = MsgpackCodec().decode(MsgpackCodec().encode(Decimal("1.10")))
    assert str(decoded) == "1.10"


def test_msgpack_returns_tuples_as_lists():
    codec = MsgpackCodec()
    assert codec.decode(codec.encode({"pair": (1, 2)})) == {"pair": [1, 2]}


def test_msgpack_keeps_tuples_inside_sets_as_tuples():
    codec = MsgpackCodec()
    value = {(1, "a"), (2, (3, frozenset({4})))}
    assert codec.decode(codec.encode(value)) == value


def test_msgpack_unsupported_type_error_names_the_type():
    with pytest.raises(CodecError, match="Widget"):
        MsgpackCodec().encode({"nested": [Widget()]})


def test_msgpack_encodes_correctly_after_a_failed_encode():
    codec = MsgpackCodec()
    with pytest.raises(CodecError):
        codec.encode(["x" * 5000, Widget()])
    assert codec.encode({"a": 1}) == msgpack.packb({"a": 1})


@pytest.mark.parametrize(
    "make_value",
    [lambda: b"x" * (16 * MIB), lambda: [b"x" * (16 * MIB), Widget()]],
    ids=["huge value", "huge value that fails"],
)
def test_msgpack_does_not_keep_a_huge_buffer_after_encoding_a_huge_value(make_value):
    codec = MsgpackCodec()
    codec.encode(1)  # so that the thread's first packer exists before measuring
    tracemalloc.start()
    try:
        with contextlib.suppress(CodecError):
            codec.encode(make_value())
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert retained < MIB


def test_msgpack_encodes_correctly_from_many_threads():
    codec = MsgpackCodec()
    failures = []

    def work(seed):
        for i in range(2000):
            value = {"seed": seed, "i": i, "when": datetime.date(2024, 1, 1 + i % 28), "s": {i}}
            if codec.decode(codec.encode(value)) != value:
                failures.append(value)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # a byte msgpack never uses
        b"\x92\x01",  # array of two with one element
        b"\x01\x02",  # trailing data
        b"\x81\x91\x01\x02",  # map whose key is an array, which is unhashable
        msgpack.packb(msgpack.ExtType(2, b"not a datetime")),
        msgpack.packb(msgpack.ExtType(2, bytes(11))),  # year 0
        # a UTC offset of a whole day, which timezone rejects
        msgpack.packb(msgpack.ExtType(4, bytes(7) + struct.pack("<q", 86_400 * 10**6))),
        msgpack.packb(msgpack.ExtType(4, bytes(7 + 7))),  # an offset one byte short
        msgpack.packb(msgpack.ExtType(5, b"short")),
        msgpack.packb(msgpack.ExtType(6, b"not 16 bytes")),
        msgpack.packb(msgpack.ExtType(7, b"1.2.3")),
        msgpack.packb(msgpack.ExtType(7, b"\xff")),
        msgpack.packb(msgpack.ExtType(8, msgpack.packb([{"k": 1}]))),  # a map inside a set
        msgpack.packb(msgpack.ExtType(99, b"")),
        b"\xa2\xff\xfe",  # a str that is not UTF-8
    ],
    ids=repr,
)
def test_msgpack_corrupted_data_raises_codec_error(data):
    with pytest.raises(CodecError):
        MsgpackCodec().decode(data)


@given(st.binary())
def test_msgpack_decode_of_arbitrary_bytes_raises_only_codec_error(data):
    with contextlib.suppress(CodecError):
        MsgpackCodec().decode(data)


@given(st.integers(min_value=0, max_value=127), st.binary())
def test_msgpack_decode_of_arbitrary_ext_payloads_raises_only_codec_error(code, payload):
    with contextlib.suppress(CodecError):
        MsgpackCodec().decode(msgpack.packb(msgpack.ExtType(code, payload)))


@given(json_like)
def test_json_round_trips_json_like_data(value):
    codec = JsonCodec()
    assert codec.decode(codec.encode(value)) == value


def test_json_returns_datetimes_uuids_and_int_keys_as_strings():
    codec = JsonCodec()
    value = {
        1: datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "id": uuid.UUID(int=1),
    }
    assert codec.decode(codec.encode(value)) == {
        "1": "2024-01-02T03:04:05+00:00",
        "id": "00000000-0000-0000-0000-000000000001",
    }


@pytest.mark.parametrize("value", [b"raw", {"nested": [b"raw"]}, {1, 2}, Decimal("1"), 2**64])
def test_json_rejects_unsupported_values_with_codec_error(value):
    with pytest.raises(CodecError, match="json codec"):
        JsonCodec().encode(value)


@pytest.mark.parametrize("data", [b"", b"{", b"[1,]", b"\xff", b"nul", b"1 2"], ids=repr)
def test_json_corrupted_data_raises_codec_error(data):
    with pytest.raises(CodecError):
        JsonCodec().decode(data)


@given(st.binary())
def test_json_decode_of_arbitrary_bytes_raises_only_codec_error(data):
    with contextlib.suppress(CodecError):
        JsonCodec().decode(data)


def test_pickle_round_trips_an_instance_of_an_arbitrary_class():
    codec = PickleCodec()
    value = Portfolio(owner="fund", holdings={"ACME": Decimal("12.5")})
    decoded = codec.decode(codec.encode(value))
    assert decoded == value
    assert type(decoded) is Portfolio


def test_pickle_unpicklable_value_raises_codec_error_naming_the_type():
    with pytest.raises(CodecError, match="lock"):
        PickleCodec().encode(threading.Lock())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        PickleCodec().encode({"a": [1, 2, 3]})[:-3],  # truncated
        b"\x80\x05cno_such_module\nThing\n.",  # a class that cannot be imported
    ],
    ids=repr,
)
def test_pickle_corrupted_data_raises_codec_error(data):
    with pytest.raises(CodecError):
        PickleCodec().decode(data)


@pytest.mark.parametrize(
    "name, cls", [("msgpack", MsgpackCodec), ("json", JsonCodec), ("pickle", PickleCodec)]
)
def test_get_codec_returns_the_named_codec(name, cls):
    codec = get_codec(name)
    assert type(codec) is cls
    assert codec.name == name
    assert isinstance(codec, Codec)


def test_get_codec_returns_a_codec_instance_unchanged():
    class Upper:
        name = "upper"

        def encode(self, value):
            return value.upper().encode()

        def decode(self, data):
            return data.decode()

    codec = Upper()
    assert get_codec(codec) is codec


def test_get_codec_unknown_name_lists_the_valid_names():
    with pytest.raises(CodecError, match="'yaml'") as info:
        get_codec("yaml")
    message = str(info.value)
    assert "'json'" in message and "'msgpack'" in message and "'pickle'" in message


@pytest.mark.parametrize("codec", [MsgpackCodec, 42, None])
def test_get_codec_rejects_what_is_neither_a_name_nor_an_instance(codec):
    with pytest.raises(CodecError, match="Codec instance"):
        get_codec(codec)


def test_compressor_leaves_data_below_threshold_uncompressed():
    data = b"a" * 1023
    assert Compressor(threshold=1024).compress(data) == (data, False)


def test_compressor_compresses_data_at_or_above_threshold():
    compressor = Compressor(threshold=1024)
    data = b"a" * 1024
    compressed, was_compressed = compressor.compress(data)
    assert was_compressed
    assert len(compressed) < len(data)
    assert compressor.decompress(compressed) == data


def test_compressor_leaves_incompressible_data_uncompressed():
    data = os.urandom(4096)
    assert Compressor(threshold=0).compress(data) == (data, False)


def test_compressor_decompresses_exactly_max_size():
    compressor = Compressor(max_size=MIB)
    compressed, _ = compressor.compress(b"\0" * MIB)
    assert compressor.decompress(compressed) == b"\0" * MIB


def test_compressor_refuses_a_frame_declaring_more_than_max_size():
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (MIB + 1))
    with pytest.raises(CodecError, match="max_size"):
        Compressor(max_size=MIB).decompress(bomb)


def test_compressor_refuses_a_frame_of_undeclared_size_beyond_max_size():
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (8 * MIB))
    assert zstandard.frame_content_size(bomb) == -1
    with pytest.raises(CodecError, match="max_size"):
        Compressor(max_size=MIB).decompress(bomb)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not zstd at all",
        zstandard.ZstdCompressor().compress(os.urandom(4096))[:-10],  # truncated
        zstandard.ZstdCompressor().compress(b"abc" * 1000) + b"junk",  # trailing data
    ],
    ids=["empty", "garbage", "truncated", "trailing"],
)
def test_compressor_corrupted_data_raises_codec_error(data):
    with pytest.raises(CodecError):
        Compressor().decompress(data)


def test_compressor_round_trips_from_many_threads():
    # zstd contexts shared between threads corrupt data or crash the interpreter.
    compressor = Compressor(threshold=0)
    failures = []

    def work(seed):
        for i in range(500):
            data = str(seed * i).encode() * 300 + os.urandom(20)
            compressed, was_compressed = compressor.compress(data)
            if not was_compressed or compressor.decompress(compressed) != data:
                failures.append((seed, i))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_compressor_rejects_an_invalid_level():
    with pytest.raises(ValueError, match="level"):
        Compressor(level=100)
