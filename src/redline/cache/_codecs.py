"""Codecs that turn cached values into bytes for Redis, and the compressor applied to those bytes.

msgpack has no standard encoding for datetimes, UUIDs, decimals, sets or integers beyond 64 bits, so
the ext types below are hand-written; their codes are part of the stored format and must never be
renumbered. zstandard offers compression but not a size threshold, a pass-through for incompressible
data, protection against decompression bombs, or thread safety, so Compressor adds those.
"""

from __future__ import annotations

import datetime
import decimal
import pickle
import struct
import threading
import uuid
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import msgpack
import orjson
import zstandard

from redline.cache._exceptions import CodecError

__all__ = [
    "Codec",
    "Compressor",
    "JsonCodec",
    "MsgpackCodec",
    "PickleCodec",
    "get_codec",
]

_EXT_BIGINT = 1
_EXT_DATETIME = 2
_EXT_DATE = 3
_EXT_TIME = 4
_EXT_TIMEDELTA = 5
_EXT_UUID = 6
_EXT_DECIMAL = 7
_EXT_SET = 8
_EXT_FROZENSET = 9

# Dates and times are packed as integers rather than ISO strings: Python 3.11's fromisoformat drops
# the sub-second part of a UTC offset, and integers are faster both ways.
_DATETIME = struct.Struct("<HBBBBBI")  # year, month, day, hour, minute, second, microsecond
_DATE = struct.Struct("<HBB")  # year, month, day
_TIME = struct.Struct("<BBBI")  # hour, minute, second, microsecond
_OFFSET = struct.Struct("<q")  # UTC offset in microseconds, appended only for aware values
_TIMEDELTA = struct.Struct("<iII")  # days, seconds, microseconds, as timedelta normalises them
_MICROSECOND = datetime.timedelta(microseconds=1)

# A msgpack Packer keeps its buffer at the largest size it has ever grown to; past this size a
# thread's packer is replaced so that one huge value does not pin that memory for the thread's life.
_PACKER_BUFFER_LIMIT = 1 << 20


@runtime_checkable
class Codec(Protocol):
    """Turns a cached value into bytes and back."""

    name: str

    def encode(self, value: object) -> bytes:
        """Return the bytes for value; raise CodecError if it cannot be encoded."""
        ...

    def decode(self, data: bytes) -> object:
        """Return the value stored in data; raise CodecError, and nothing else, on bad input."""
        ...


def _ext_default(obj: object) -> msgpack.ExtType:
    """Encode a value msgpack cannot encode natively as one of redline's ext types."""
    # datetime is a subclass of date, so it must be tested first.
    if isinstance(obj, datetime.datetime):
        fields = (obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second, obj.microsecond)
        return msgpack.ExtType(_EXT_DATETIME, _DATETIME.pack(*fields) + _pack_offset(obj))
    if isinstance(obj, datetime.date):
        return msgpack.ExtType(_EXT_DATE, _DATE.pack(obj.year, obj.month, obj.day))
    # msgpack packs ints natively and only hands over those beyond 64 bits.
    if isinstance(obj, int):
        size = (obj.bit_length() + 8) // 8
        return msgpack.ExtType(_EXT_BIGINT, obj.to_bytes(size, "big", signed=True))
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, obj.bytes)
    if isinstance(obj, decimal.Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode("ascii"))
    if isinstance(obj, datetime.timedelta):
        packed = _TIMEDELTA.pack(obj.days, obj.seconds, obj.microseconds)
        return msgpack.ExtType(_EXT_TIMEDELTA, packed)
    if isinstance(obj, datetime.time):
        fields = (obj.hour, obj.minute, obj.second, obj.microsecond)
        return msgpack.ExtType(_EXT_TIME, _TIME.pack(*fields) + _pack_offset(obj))
    if isinstance(obj, (set, frozenset)):
        code = _EXT_FROZENSET if isinstance(obj, frozenset) else _EXT_SET
        # A fresh packer: this runs inside the thread's packer, which must not be re-entered.
        elements = msgpack.packb(list(obj), default=_ext_default, use_bin_type=True)
        return msgpack.ExtType(code, elements)
    raise TypeError(
        f"cannot encode a value of type {type(obj).__qualname__}; convert it to a supported type"
        " or choose the 'pickle' codec"
    )


def _pack_offset(value: datetime.datetime | datetime.time) -> bytes:
    """Return the packed UTC offset of an aware value, or nothing for a naive one."""
    offset = value.utcoffset()
    return b"" if offset is None else _OFFSET.pack(offset // _MICROSECOND)


def _unpack_offset(data: bytes) -> datetime.timezone | None:
    """Return the fixed-offset timezone packed by _pack_offset."""
    if not data:
        return None
    (microseconds,) = _OFFSET.unpack(data)
    return datetime.timezone(datetime.timedelta(microseconds=microseconds))


def _unpack_datetime(data: bytes) -> datetime.datetime:
    """Decode a datetime packed by _ext_default."""
    tzinfo = _unpack_offset(data[_DATETIME.size :])
    return datetime.datetime(*_DATETIME.unpack_from(data), tzinfo=tzinfo)


def _unpack_time(data: bytes) -> datetime.time:
    """Decode a time packed by _ext_default."""
    return datetime.time(*_TIME.unpack_from(data), tzinfo=_unpack_offset(data[_TIME.size :]))


def _unpack_elements(data: bytes) -> tuple[object, ...]:
    """Decode the elements of a set, whose arrays can only have been tuples."""
    return msgpack.unpackb(
        data, raw=False, strict_map_key=False, ext_hook=_ext_hook, use_list=False
    )


_EXT_DECODERS: dict[int, Callable[[bytes], object]] = {
    _EXT_BIGINT: lambda data: int.from_bytes(data, "big", signed=True),
    _EXT_DATETIME: _unpack_datetime,
    _EXT_DATE: lambda data: datetime.date(*_DATE.unpack(data)),
    _EXT_TIME: _unpack_time,
    _EXT_TIMEDELTA: lambda data: datetime.timedelta(*_TIMEDELTA.unpack(data)),
    _EXT_UUID: lambda data: uuid.UUID(bytes=data),
    _EXT_DECIMAL: lambda data: decimal.Decimal(data.decode("ascii")),
    _EXT_SET: lambda data: set(_unpack_elements(data)),
    _EXT_FROZENSET: lambda data: frozenset(_unpack_elements(data)),
}


def _ext_hook(code: int, data: bytes) -> object:
    """Decode one of redline's ext types."""
    decoder = _EXT_DECODERS.get(code)
    if decoder is None:
        raise ValueError(f"unknown msgpack ext type {code}")
    return decoder(data)


def _new_packer() -> msgpack.Packer:
    """Return a Packer that knows redline's ext types."""
    return msgpack.Packer(default=_ext_default, use_bin_type=True)


class _ThreadPacker(threading.local):
    """One msgpack Packer per thread, because a Packer is not thread-safe."""

    def __init__(self) -> None:
        self.packer = _new_packer()


def _describe(data: object) -> str:
    """Describe input for an error message without echoing its contents."""
    try:
        return f"{len(data)} bytes"  # type: ignore[arg-type]
    except TypeError:
        return f"a {type(data).__qualname__}"


class MsgpackCodec:
    """The default codec: compact msgpack with ext types for common Python values.

    Round-trips None, bool, int of any size, float, str, bytes, list, dict, datetime (naive or
    aware; aware ones come back with a fixed-offset timezone), date, time, timedelta, UUID, Decimal,
    set and frozenset. Tuples come back as lists, except inside sets, where they stay tuples;
    so a dict keyed by tuples encodes but cannot be decoded.
    """

    name = "msgpack"

    def __init__(self) -> None:
        # Measured: a per-thread Packer beats msgpack.packb, which allocates a fresh 256 KiB buffer
        # on every call, by about half.
        self._local = _ThreadPacker()

    def encode(self, value: object) -> bytes:
        """Return the msgpack bytes for value."""
        local = self._local
        try:
            data = local.packer.pack(value)
        except Exception as exc:
            # The buffer may have grown before the failure; start the thread afresh.
            local.packer = _new_packer()
            raise CodecError(f"msgpack codec: {exc}") from exc
        if len(data) > _PACKER_BUFFER_LIMIT:
            local.packer = _new_packer()
        return data

    def decode(self, data: bytes) -> object:
        """Return the value stored in msgpack bytes."""
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook)
        except Exception as exc:
            # Stored bytes are untrusted and msgpack plus the ext decoders raise many exception
            # types; callers must be able to treat exactly one as "unreadable entry".
            raise CodecError(f"msgpack codec cannot decode {_describe(data)}: {exc}") from exc


class JsonCodec:
    """JSON via orjson, for values other programs read too.

    Non-str dict keys are written as strings and come back as strings; datetimes, dates, times and
    UUIDs are written as ISO or hex strings and come back as strings. bytes, sets, Decimal and ints
    beyond 64 bits are not supported.
    """

    name = "json"

    def encode(self, value: object) -> bytes:
        """Return the JSON bytes for value."""
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError as exc:
            raise CodecError(f"json codec: {exc}; choose the 'msgpack' codec") from exc

    def decode(self, data: bytes) -> object:
        """Return the value stored in JSON bytes."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CodecError(f"json codec cannot decode {_describe(data)}: {exc}") from exc


class PickleCodec:
    """pickle protocol 5, for arbitrary Python objects; never the default.

    Unpickling runs code chosen by whoever wrote the bytes: use it only when every client that can
    write to the Redis server is trusted.
    """

    name = "pickle"

    def encode(self, value: object) -> bytes:
        """Return the pickle bytes for value."""
        try:
            return pickle.dumps(value, protocol=5)
        except Exception as exc:
            # pickle raises PicklingError, TypeError, AttributeError or whatever __reduce__ raises.
            raise CodecError(
                f"pickle codec cannot encode {type(value).__qualname__}: {exc}"
            ) from exc

    def decode(self, data: bytes) -> object:
        """Return the value stored in pickle bytes."""
        try:
            return pickle.loads(data)
        except Exception as exc:
            # Unpickling can raise anything, including whatever an object's __setstate__ raises.
            raise CodecError(f"pickle codec cannot decode {_describe(data)}: {exc}") from exc


_CODECS: dict[str, type[Codec]] = {
    codec.name: codec for codec in (MsgpackCodec, JsonCodec, PickleCodec)
}


def get_codec(codec: str | Codec) -> Codec:
    """Return the codec with this name, or codec itself if it is already a Codec instance."""
    if isinstance(codec, str):
        try:
            return _CODECS[codec]()
        except KeyError:
            names = ", ".join(repr(name) for name in sorted(_CODECS))
            raise CodecError(
                f"unknown codec {codec!r}; use one of {names} or pass a Codec instance"
            ) from None
    # A Codec class passes the runtime protocol check too, but its methods need an instance.
    if isinstance(codec, Codec) and not isinstance(codec, type):
        return codec
    raise CodecError(
        f"codec must be a codec name or a Codec instance (with name, encode and decode),"
        f" not {codec!r}"
    )


class _ZstdContexts(threading.local):
    """One zstd compressor and decompressor per thread, because neither is thread-safe."""

    def __init__(self, level: int) -> None:
        self.compressor = zstandard.ZstdCompressor(level=level)
        self.decompressor = zstandard.ZstdDecompressor()


class Compressor:
    """zstd compression for encoded values worth compressing, with a guard against bombs."""

    def __init__(self, level: int = 3, threshold: int = 1024, max_size: int = 64 << 20) -> None:
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0 bytes, got {threshold}")
        if max_size <= 0:
            raise ValueError(f"max_size must be > 0 bytes, got {max_size}")
        self.level = level
        self.threshold = threshold
        self.max_size = max_size
        # Measured: creating zstd contexts per call costs about 10 us, several times a compression
        # of a few KiB. Built here too so that a bad level fails now, not on first use.
        self._local = _ZstdContexts(level)

    def compress(self, data: bytes) -> tuple[bytes, bool]:
        """Return (compressed, True), or (data, False) if data is small or does not shrink."""
        if len(data) < self.threshold:
            return data, False
        compressed = self._local.compressor.compress(data)
        if len(compressed) >= len(data):
            return data, False
        return compressed, True

    def decompress(self, data: bytes) -> bytes:
        """Return the decompressed data; raise CodecError if it is corrupt or exceeds max_size."""
        try:
            declared = zstandard.frame_content_size(data)
        except zstandard.ZstdError as exc:
            raise CodecError(f"not a zstd frame ({_describe(data)}): {exc}") from exc
        # zstandard ignores max_output_size when the frame declares its size, so check it here.
        if declared > self.max_size:
            raise CodecError(
                f"zstd frame declares {declared} bytes, more than max_size={self.max_size}"
            )
        try:
            return self._local.decompressor.decompress(
                data, max_output_size=self.max_size, allow_extra_data=False
            )
        except zstandard.ZstdError as exc:
            raise CodecError(
                f"cannot decompress zstd frame ({_describe(data)}, max_size={self.max_size}): {exc}"
            ) from exc
