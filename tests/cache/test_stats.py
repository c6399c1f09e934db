"""stats(): counters, hit ratio and latency summaries follow what the cache did."""

import math

import pytest


class LoaderFailed(Exception):
    pass


def failing():
    raise LoaderFailed("source down")


async def test_counters_follow_a_scripted_sequence_of_two_tier_calls(flavour):
    # No tracking: no invalidation message can move an entry in or out of L1 behind our back.
    cache = flavour.cache(tracking=False)
    other = flavour.build(l1=None, l2=flavour.tier())
    await other.set("b", "from other")

    assert await cache.get("a") is None  # L1 miss, L2 miss
    assert await cache.get_or_set("a", lambda: 1) == 1  # L1 miss, L2 miss, load, set
    assert await cache.get("a") == 1  # L1 hit
    assert await cache.get("a") == 1  # L1 hit
    assert await cache.get("b") == "from other"  # L1 miss, L2 hit, fills L1
    with pytest.raises(LoaderFailed):
        await cache.get_or_set("c", failing)  # L1 miss, L2 miss, load error

    stats = cache.stats()
    assert stats["gets"] == 6
    assert stats["hits"] == 3
    assert stats["misses"] == 3
    assert stats["hit_ratio"] == 0.5
    assert stats["loads"] == 1
    assert stats["load_errors"] == 1
    assert stats["load_latency"]["count"] == 2
    assert stats["decode_errors"] == 0
    assert stats["rejected"] == 0

    l1 = stats["l1"]
    assert (l1["hits"], l1["misses"], l1["sets"], l1["entries"]) == (2, 4, 2, 2)
    assert l1["evictions"] == 0

    l2 = stats["l2"]
    assert (l2["hits"], l2["misses"], l2["sets"]) == (1, 3, 1)
    assert l2["errors"] == 0
    assert l2["skipped"] == 0
    assert l2["bytes_written"] > 0
    assert l2["bytes_read"] > 0
    assert l2["latency"]["count"] == 5  # four reads and one write
    assert l2["breaker"]["state"] == "closed"
    assert l2["pending_writes"] == 0


async def test_counters_follow_a_scripted_sequence_of_memory_only_calls(flavour):
    cache = flavour.memory()
    assert await cache.get("a") is None
    await cache.set("a", 1)
    for _ in range(3):
        assert await cache.get("a") == 1
    assert await cache.get("b") is None

    stats = cache.stats()
    assert stats["gets"] == 5
    assert stats["hits"] == 3
    assert stats["hit_ratio"] == 0.6
    assert stats["l1"]["misses"] == 2
    assert stats["l1"]["sets"] == 1
    assert stats["l2"] is None


async def test_hit_ratio_is_nan_before_any_lookup(flavour):
    cache = flavour.memory()
    stats = cache.stats()
    assert stats["gets"] == 0
    assert math.isnan(stats["hit_ratio"])


async def test_hits_stay_counted_after_their_entry_is_deleted_or_evicted(flavour):
    cache = flavour.memory(max_entries=1)
    await cache.set("a", 1)
    for _ in range(3):
        await cache.get("a")
    await cache.delete("a")
    await cache.set("b", 2)
    await cache.get("b")
    await cache.set("c", 3)  # b was hit, so it gets a second chance and c is evicted

    stats = cache.stats()
    assert stats["hits"] == 4
    assert stats["l1"]["hits"] == 4
    assert stats["l1"]["evictions"] == 1
    assert list(cache.l1.data) == ["b"]


async def test_latency_summaries_count_what_was_timed(flavour):
    cache = flavour.cache(tracking=False)
    for i in range(200):
        await cache.get(f"missing{i}")

    stats = cache.stats()
    l2 = stats["l2"]["latency"]
    assert l2["count"] == 200
    assert 0 < l2["p50_us"] <= l2["p95_us"] <= l2["p99_us"] <= l2["max_us"]
    # L1 lookups are cheap, so only a sample of them is timed.
    l1 = stats["l1"]["latency"]
    assert 1 <= l1["count"] < 200
    assert l1["p50_us"] > 0
    assert stats["load_latency"] == {"count": 0}


async def test_tracking_shows_in_stats_once_the_listener_is_subscribed(flavour):
    cache = flavour.cache()
    assert cache.stats()["l2"]["tracking"] is False
    await cache.ready()
    assert cache.stats()["l2"]["tracking"] is True
