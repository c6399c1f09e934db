"""The byte layout of an entry stored in Redis.

::

    0xA1 | flags (1 byte) | asof (big-endian double, server µs) | n tags (uint16)
    | n x (uint16 length, tag bytes) | body (codec output, zstd-compressed when flagged)

The header is parsed by the Lua read script, which rejects an entry whose tags were
invalidated at or after its ``asof`` time, so that a stale entry never leaves Redis.
"""

from __future__ import annotations

import struct

from redline.cache._exceptions import CodecError

MAGIC = 0xA1
FLAG_ZSTD = 0x01
_HEAD = struct.Struct(">BBdH")
_LEN = struct.Struct(">H")
ASOF_OFFSET = 2  # where the asof double starts; the write script stamps it when it is 0


def pack(body: bytes, compressed: bool, asof: float, tags: tuple[str, ...]) -> bytes:
    parts = [_HEAD.pack(MAGIC, FLAG_ZSTD if compressed else 0, asof, len(tags))]
    for tag in tags:
        raw = tag.encode()
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    parts.append(body)
    return b"".join(parts)


def unpack(blob: bytes) -> tuple[bool, float, tuple[str, ...], bytes]:
    """Return (compressed, asof, tags, body); raise CodecError on a malformed header."""
    try:
        magic, flags, asof, count = _HEAD.unpack_from(blob)
        if magic != MAGIC:
            raise CodecError(f"not a redline entry (first byte 0x{blob[0]:02x})")
        pos = _HEAD.size
        tags = []
        for _ in range(count):
            (length,) = _LEN.unpack_from(blob, pos)
            pos += 2
            tags.append(blob[pos : pos + length].decode())
            pos += length
        if pos > len(blob):
            raise CodecError("truncated entry header")
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise CodecError(f"malformed entry header: {exc}") from None
    return bool(flags & FLAG_ZSTD), asof, tuple(tags), blob[pos:]
