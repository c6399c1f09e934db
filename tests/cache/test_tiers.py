"""How L1 and L2 work together: lifetimes, cross-process invalidation, single-tier caches."""

import datetime
import os
import struct
from decimal import Decimal
from fractions import Fraction
from time import monotonic

import pytest

from redline.cache import CodecError, MsgpackCodec
from redline.cache._memory import EXPIRES, VALUE

PREFIX = "redline:default:1:k:"


async def test_l1_copy_written_by_set_expires_no_later_than_the_l2_entry(flavour, raw):
    # Without tracking no invalidation message can drop the L1 copy before we look at it.
    cache = flavour.cache(tracking=False)
    await cache.set("k", "v", ttl=1)
    expires = cache.l1.data["k"][EXPIRES]
    pttl = raw.pttl(PREFIX + "k")
    after = monotonic()
    assert 900 < pttl <= 1000
    assert expires > after + 0.9
    # L2 expires by after + pttl + 1 ms (PTTL truncates to whole ms); L1 must not be later.
    assert expires <= after + (pttl + 1) / 1000


async def test_l2_entry_with_300ms_left_read_into_l1_leaves_l1_by_then(flavour, raw):
    writer = flavour.build(l1=None, l2=flavour.tier())
    # No tracking: Redis's expiry message cannot drop the L1 copy, only its own expiry can.
    reader = flavour.cache(tracking=False)
    await writer.set("k", "v", ttl=0.3)

    assert await reader.get("k") == "v"
    expires = reader.l1.data["k"][EXPIRES]
    assert expires <= monotonic() + 0.3

    await flavour.eventually(lambda: not raw.exists(PREFIX + "k"), timeout=1.0)
    assert await reader.get("k") is None
    assert "k" not in reader.l1.data
    assert reader.stats()["l1"]["expirations"] == 1


async def test_l1_copy_is_dropped_when_another_cache_sets_the_key(flavour):
    a = flavour.cache()
    b = flavour.cache()
    await b.ready()
    await a.set("k", "old")
    await flavour.settle()
    assert await b.get("k") == "old"
    assert b.l1.data["k"][VALUE] == "old"

    await a.set("k", "new")
    await flavour.eventually(lambda: "k" not in b.l1.data)
    assert await b.get("k") == "new"


async def test_l1_copy_is_dropped_when_another_cache_deletes_the_key(flavour):
    a = flavour.cache()
    b = flavour.cache()
    await b.ready()
    await a.set("k", "v")
    await flavour.settle()
    assert await b.get("k") == "v"
    assert "k" in b.l1.data

    await a.delete("k")
    await flavour.eventually(lambda: "k" not in b.l1.data)
    assert await b.get("k") is None


async def test_memory_only_cache_works_without_redis(flavour, raw):
    cache = flavour.memory()
    await cache.set("k", {"a": 1})
    assert await cache.get("k") == {"a": 1}
    await cache.delete("k")
    assert await cache.get("k", "missing") == "missing"
    assert cache.stats()["l2"] is None
    assert raw.dbsize() == 0


async def test_redis_only_cache_serves_every_read_from_redis(flavour, raw):
    a = flavour.build(l1=None, l2=flavour.tier())
    b = flavour.build(l1=None, l2=flavour.tier())
    await a.set("k", 1)
    assert raw.exists(PREFIX + "k")
    assert await b.get("k") == 1
    # No L1 copy to go stale: another cache's write is visible at once.
    await a.set("k", 2)
    assert await b.get("k") == 2
    stats = b.stats()
    assert stats["l1"] is None
    assert stats["l2"]["hits"] == 2


async def test_values_round_trip_through_redis_with_their_types(flavour):
    value = {
        "when": datetime.datetime(2024, 2, 29, 23, 59, 1, 5, tzinfo=datetime.UTC),
        "day": datetime.date(2024, 1, 1),
        "price": Decimal("12.30"),
        "raw": b"\x00\xff\x10",
        "nested": {"list": [1, 2.5, None, True, "é"], "big": 2**70, "set": {1, 2}},
    }
    writer = flavour.cache()
    reader = flavour.build(l1=None, l2=flavour.tier())
    await writer.set("k", value)
    got = await reader.get("k")
    assert got == value
    assert str(got["price"]) == "12.30"
    assert type(got["raw"]) is bytes
    assert got["when"].tzinfo is not None


async def test_values_above_the_threshold_are_stored_compressed(flavour, raw):
    cache = flavour.cache(compress_threshold=1024)
    reader = flavour.build(l1=None, l2=flavour.tier())
    big = "redline " * 1000
    small = "redline " * 10
    await cache.set("big", big)
    await cache.set("small", small)

    body = MsgpackCodec().encode(big)
    stored = raw.get(PREFIX + "big")
    assert len(stored) < len(body) / 4
    assert raw.get(PREFIX + "small").endswith(MsgpackCodec().encode(small))
    assert await reader.get("big") == big
    assert await reader.get("small") == small


HEADER = struct.Struct(">BBddH")  # magic, flags, asof, expires, number of tags: see _entry.py
FAR = 4e15  # an expiry time (server µs) far in the future

UNDECODABLE = {
    "not-an-entry": b"written by someone else",
    "old-format": struct.pack(">BBdH", 0xA1, 0, 1.0, 0) + b"\xc0",
    "bad-body": HEADER.pack(0xA2, 0, 1.0, FAR, 0) + b"\xc1",  # 0xc1 is never valid msgpack
    "bad-zstd": HEADER.pack(0xA2, 1, 1.0, FAR, 0) + b"not zstd",
    "truncated": HEADER.pack(0xA2, 0, 1.0, FAR, 3) + b"\x00",
}


async def test_undecodable_entry_is_a_miss_and_is_deleted_from_redis(flavour, raw):
    cache = flavour.cache()
    for key, payload in UNDECODABLE.items():
        raw.set(PREFIX + key, payload)

    for key in UNDECODABLE:
        assert await cache.get(key, "default") == "default"
        assert not raw.exists(PREFIX + key)
    assert cache.stats()["decode_errors"] == len(UNDECODABLE)


async def test_undecodable_entry_is_replaced_by_get_or_set(flavour, raw):
    cache = flavour.cache()
    reader = flavour.build(l1=None, l2=flavour.tier())
    raw.set(PREFIX + "k", b"garbage")
    assert await cache.get_or_set("k", lambda: "fresh") == "fresh"
    assert await reader.get("k") == "fresh"
    assert cache.stats()["decode_errors"] == 1


async def test_value_over_max_value_bytes_is_not_cached_and_removes_the_old_one(flavour, raw):
    cache = flavour.cache(max_value_bytes=1000)
    await cache.set("k", "small")
    assert raw.exists(PREFIX + "k")

    await cache.set("k", os.urandom(5000))
    assert not raw.exists(PREFIX + "k")
    assert "k" not in cache.l1.data
    assert await cache.get("k") is None
    assert cache.stats()["rejected"] == 1


async def test_pickle_codec_caches_arbitrary_objects_when_chosen(flavour):
    writer = flavour.cache(codec="pickle")
    reader = flavour.build(l1=None, l2=flavour.tier(), codec="pickle")
    await writer.set("k", Fraction(1, 3))
    assert await reader.get("k") == Fraction(1, 3)


async def test_default_codec_refuses_arbitrary_objects_naming_the_key(flavour, raw):
    cache = flavour.cache()
    with pytest.raises(CodecError, match="'obj-key'"):
        await cache.set("obj-key", Fraction(1, 3))
    assert not raw.exists(PREFIX + "obj-key")
