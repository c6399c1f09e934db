"""The byte layout of an entry stored in Redis.

::

    0xA2 | flags (1 byte) | asof (big-endian double, server µs) | expires (double, server µs)
    | n tags (uint16) | n x (uint16 length, tag bytes) | body (codec output, zstd when flagged)

An entry is stale when one of its tags was invalidated at or after its ``asof`` time: when
its value was read from the source. The write script stamps both times with the server's
clock (``asof`` as "now minus the age the writer reports"), so no client clock is trusted,
and a reader can bound an L1 copy's lifetime without asking Redis for the key's TTL.
"""

from __future__ import annotations

import struct

from redline.cache._exceptions import CodecError

MAGIC = 0xA2
FLAG_ZSTD = 0x01
_HEAD = struct.Struct(">BBddH")
_LEN = struct.Struct(">H")


def pack(body: bytes, compressed: bool, tags: tuple[str, ...]) -> bytes:
    """Frame ``body``; ``asof`` and ``expires`` are left 0 for the write script to stamp."""
    parts = [_HEAD.pack(MAGIC, FLAG_ZSTD if compressed else 0, 0.0, 0.0, len(tags))]
    for tag in tags:
        raw = tag.encode()
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    parts.append(body)
    return b"".join(parts)


def unpack(blob: bytes) -> tuple[bool, float, float, tuple[str, ...], bytes]:
    """Return (compressed, asof, expires, tags, body); raise CodecError on a bad header."""
    try:
        magic, flags, asof, expires, count = _HEAD.unpack_from(blob)
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
    return bool(flags & FLAG_ZSTD), asof, expires, tuple(tags), blob[pos:]
