"""The in-process tier: bounded by entries and bytes, second-chance eviction, TTL cap."""

import asyncio
import os
import random

import pytest

from redline.cache import MemoryTier
from redline.cache._memory import SIZE

# os.urandom(1000) encodes to 1003 msgpack bytes (bin 16 header) and does not compress.
VALUE_BYTES = 1003


async def test_l1_never_holds_more_than_max_entries(flavour):
    cache = flavour.memory(max_entries=100)
    for i in range(1000):
        await cache.set(f"k{i}", i)
        assert len(cache.l1) <= 100

    stats = cache.stats()["l1"]
    assert stats["entries"] == 100
    assert stats["evictions"] == 900
    # With no hits eviction is oldest first.
    assert set(cache.l1.data) == {f"k{i}" for i in range(900, 1000)}


async def test_l1_never_holds_more_than_max_bytes(flavour):
    cache = flavour.memory(max_bytes=10_000)
    for i in range(50):
        await cache.set(f"k{i}", os.urandom(1000))
        assert cache.l1.bytes <= 10_000

    stats = cache.stats()["l1"]
    assert stats["entries"] == 9
    assert stats["bytes"] == 9 * VALUE_BYTES
    assert stats["evictions"] == 41


async def test_l1_stays_within_both_bounds_under_mixed_sizes(flavour):
    cache = flavour.memory(max_entries=20, max_bytes=10_000)
    rng = random.Random(7)
    for i in range(500):
        await cache.set(f"k{i}", os.urandom(rng.randrange(10, 2000)))
        if rng.random() < 0.3:
            await cache.get(f"k{rng.randrange(i + 1)}")
        assert len(cache.l1) <= 20
        assert cache.l1.bytes <= 10_000
    # bytes is the sum of what is held, not a drifting counter
    assert cache.l1.bytes == sum(entry[SIZE] for entry in cache.l1.data.values())


async def test_entries_evicted_from_l1_are_still_served_from_redis(flavour):
    cache = flavour.build(l1=MemoryTier(max_entries=10), l2=flavour.tier())
    await cache.set_many({f"k{i}": i for i in range(100)})
    assert len(cache.l1) <= 10
    assert "k0" not in cache.l1.data
    assert await cache.get("k0") == 0


async def test_value_larger_than_l1_max_bytes_is_kept_only_in_redis(flavour):
    cache = flavour.build(l1=MemoryTier(max_bytes=500), l2=flavour.tier())
    await cache.set("big", os.urandom(1000))
    assert "big" not in cache.l1.data
    assert cache.l1.bytes == 0
    assert len(await cache.get("big")) == 1000


async def test_second_chance_keeps_a_frequently_hit_entry_over_cold_ones(flavour):
    cache = flavour.memory(max_entries=10)
    await cache.set("hot", "h")
    for i in range(50):
        await cache.set(f"cold{i}", i)
        assert await cache.get("hot") == "h"

    assert "hot" in cache.l1.data
    assert len(cache.l1) == 10
    assert cache.stats()["l1"]["evictions"] == 41


async def test_an_entry_never_hit_is_evicted_first_in_first_out(flavour):
    cache = flavour.memory(max_entries=10)
    await cache.set("hot", "h")
    for i in range(10):
        await cache.set(f"cold{i}", i)
    assert "hot" not in cache.l1.data


async def test_delete_and_clear_release_their_bytes(flavour):
    cache = flavour.memory()
    await cache.set("a", os.urandom(1000))
    await cache.set("b", os.urandom(1000))
    assert cache.l1.bytes == 2 * VALUE_BYTES
    await cache.delete("a")
    assert cache.l1.bytes == VALUE_BYTES
    await cache.clear()
    assert cache.l1.bytes == 0
    assert len(cache.l1) == 0


async def test_l1_ttl_caps_an_entrys_lifetime_whatever_its_ttl(flavour):
    cache = flavour.memory(l1_ttl=0.2)
    await cache.set("k", "v", ttl=300)
    assert await cache.get("k") == "v"
    await asyncio.sleep(0.25)
    assert await cache.get("k") is None
    assert cache.stats()["l1"]["expirations"] == 1


async def test_entry_ttl_shorter_than_l1_ttl_wins(flavour):
    cache = flavour.memory()
    await cache.set("k", "v", ttl=0.1)
    assert await cache.get("k") == "v"
    await asyncio.sleep(0.15)
    assert await cache.get("k") is None


@pytest.mark.parametrize(
    "options", [{"max_entries": 0}, {"max_bytes": 0}, {"ttl": 0}], ids=lambda o: next(iter(o))
)
def test_memory_tier_refuses_non_positive_bounds(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        MemoryTier(**options)
