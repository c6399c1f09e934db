"""``instrument_cache``: a real ``Cache`` / ``SyncCache`` on a real Redis, read through the
exposition and the collected families, with Redis paused and killed for the breaker."""

from __future__ import annotations

import asyncio
import gc
import inspect
import math
from collections.abc import AsyncIterator, Callable
from time import monotonic
from typing import Any

import pytest

from redline import monitor
from redline.cache import Cache, SyncCache

TIMEOUT = 0.05


class Driven:
    """A Cache or SyncCache driven with awaitable calls whatever its flavour."""

    def __init__(self, cache: Cache | SyncCache) -> None:
        self.cache = cache

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.cache, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return call


@pytest.fixture(params=["async", "sync"])
def flavour(request: pytest.FixtureRequest) -> type[Cache] | type[SyncCache]:
    return Cache if request.param == "async" else SyncCache


@pytest.fixture
async def caches(flavour) -> AsyncIterator[Callable[..., Driven]]:
    made: list[Cache | SyncCache] = []

    def make(url: str | None = None, **options: Any) -> Driven:
        cache = flavour.from_url(url, **options) if url else flavour.memory(**options)
        made.append(cache)
        return Driven(cache)

    yield make
    for cache in made:
        closed = cache.aclose() if isinstance(cache, Cache) else cache.close()
        if closed is not None:
            await closed


@pytest.fixture
def registry() -> monitor.Registry:
    return monitor.Registry()


def samples(registry: monitor.Registry, name: str) -> dict[tuple[str, ...], float]:
    families = {family.name: family for family in registry.collect()}
    return dict(families[name].samples)


def value(registry: monitor.Registry, name: str, *labels: str) -> float:
    return samples(registry, name)[labels]


async def eventually(predicate: Callable[[], Any], timeout: float = 3.0) -> None:
    deadline = monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert monotonic() < deadline, "not true in time"
        await asyncio.sleep(0.01)


# -- counting -------------------------------------------------------------------------------


async def ready(cache: Driven) -> None:
    """Until the invalidation stream is connected, reads from Redis do not fill L1."""
    await cache.get("-ready-")
    await eventually(lambda: cache.cache.stats()["l2"]["tracking"])


async def test_hits_and_misses_are_counted_per_tier_after_real_gets_and_sets(
    caches, redis_url, registry
):
    # Not tests of timeouts: a slow CI core must not open the breaker (default 50 ms).
    writer, reader = caches(redis_url, timeout=5.0), caches(redis_url, timeout=5.0)
    monitor.instrument_cache(writer.cache, name="writer", registry=registry)
    monitor.instrument_cache(reader.cache, name="reader", registry=registry)
    await ready(writer)
    await ready(reader)
    before = {
        name: samples(registry, f"redline_cache_{name}_total")
        for name in ("gets", "hits", "misses", "sets")
    }

    def moved(name: str, *labels: str) -> float:
        now = value(registry, f"redline_cache_{name}_total", *labels)
        return now - before[name].get(labels, 0.0)

    await writer.set("fund:1", {"nav": 101.5})
    # The write's invalidation message reaches the reader's listener on its own time; let it
    # arrive before the reader fills its L1, or it would drop the fresh entry (as it should).
    await asyncio.sleep(0.2)
    assert await writer.get("fund:404") is None  # L1 miss, L2 miss
    # The reader has its own L1: its first read comes from Redis and fills L1.
    assert await reader.get("fund:1") == {"nav": 101.5}
    assert await reader.get("fund:1") == {"nav": 101.5}
    assert await reader.get("fund:404") is None

    assert moved("gets", "reader") == 3
    assert moved("hits", "reader", "l1") == 1
    assert moved("hits", "reader", "l2") == 1
    assert moved("misses", "reader", "l1") == 2
    assert moved("misses", "reader", "l2") == 1
    assert moved("gets", "writer") == 1
    assert moved("misses", "writer", "l2") == 1
    assert moved("sets", "writer", "l2") == 1
    # Every figure is the cache's own.
    stats = reader.cache.stats()
    assert value(registry, "redline_cache_hit_ratio", "reader", "all") == stats["hit_ratio"]
    l2 = stats["l2"]
    ratio = l2["hits"] / (l2["hits"] + l2["misses"])
    assert value(registry, "redline_cache_hit_ratio", "reader", "l2") == pytest.approx(ratio)
    assert value(registry, "redline_cache_l2_read_bytes_total", "reader") == l2["bytes_read"] > 0
    assert value(registry, "redline_cache_l1_entries", "reader") == stats["l1"]["entries"] == 1
    assert value(registry, "redline_cache_l1_bytes", "reader") == stats["l1"]["bytes"] > 0
    assert value(registry, "redline_cache_l2_breaker_state", "reader") == 0
    assert value(registry, "redline_cache_l2_tracking", "reader") == 1


async def test_loads_and_their_latency_are_exported_in_seconds(caches, redis_url, registry):
    cache = caches(redis_url, timeout=5.0)  # not a test of timeouts (default 50 ms)
    monitor.instrument_cache(cache.cache, registry=registry)

    def loader() -> str:
        return "loaded"

    for i in range(20):
        assert await cache.get_or_set(f"k{i}", loader) == "loaded"
    with pytest.raises(ZeroDivisionError):
        await cache.get_or_set("boom", lambda: 1 / 0)

    assert value(registry, "redline_cache_loads_total", "default") == 20
    assert value(registry, "redline_cache_load_errors_total", "default") == 1
    latency = samples(registry, "redline_cache_latency_seconds")
    for tier in ("l2", "loader"):
        p50, p99, top = (latency[("default", tier, q)] for q in ("0.5", "0.99", "1"))
        assert 0 < p50 <= p99 <= top < 1.0, (tier, p50, p99, top)
    micros = cache.cache.stats()["l2"]["latency"]["p99_us"]
    assert latency[("default", "l2", "0.99")] == pytest.approx(micros / 1e6)


async def test_a_memory_only_cache_has_no_redis_series(caches, registry):
    cache = caches(max_entries=2)
    monitor.instrument_cache(cache.cache, name="local", registry=registry)
    for key in ("a", "b", "c"):
        await cache.set(key, key * 100)

    exposition = monitor.generate_latest(registry).decode()
    assert 'redline_cache_l1_evictions_total{cache="local"} 1.0' in exposition
    assert 'redline_cache_l1_max_entries{cache="local"} 2.0' in exposition
    assert 'redline_cache_l1_entries{cache="local"} 2.0' in exposition
    assert 'tier="l2"' not in exposition and "redline_cache_l2_breaker_state{" not in exposition
    assert math.isnan(value(registry, "redline_cache_hit_ratio", "local", "all"))


# -- Redis outages --------------------------------------------------------------------------


async def test_the_breaker_state_flips_to_open_when_redis_hangs_and_back_when_it_resumes(
    caches, own_redis, registry
):
    cache = caches(own_redis.url, timeout=TIMEOUT, breaker_duration=0.2)
    monitor.instrument_cache(cache.cache, name="hung", registry=registry)
    await cache.set("k", "v")
    assert value(registry, "redline_cache_l2_breaker_state", "hung") == 0

    own_redis.pause()
    try:
        assert await cache.get("other", "fallback") == "fallback"
        assert value(registry, "redline_cache_l2_breaker_state", "hung") == 1
        assert value(registry, "redline_cache_l2_breaker_opened_total", "hung") == 1
        assert value(registry, "redline_cache_l2_breaker_failures", "hung") == 1
        assert value(registry, "redline_cache_l2_errors_total", "hung") == 1
        for i in range(5):
            await cache.get(f"skipped{i}")
        assert value(registry, "redline_cache_l2_skipped_total", "hung") >= 5
    finally:
        own_redis.resume()

    async def closed() -> bool:
        await cache.get("-nudge-")
        return value(registry, "redline_cache_l2_breaker_state", "hung") == 0

    await eventually(closed)
    assert value(registry, "redline_cache_l2_breaker_failures", "hung") == 0


async def test_a_killed_redis_shows_an_open_breaker_and_the_writes_waiting_for_it(
    caches, own_redis, registry
):
    cache = caches(own_redis.url, timeout=TIMEOUT, breaker_duration=0.2)
    monitor.instrument_cache(cache.cache, name="killed", registry=registry)
    await cache.set("warm", 1)
    await eventually(lambda: value(registry, "redline_cache_l2_tracking", "killed") == 1)

    own_redis.kill()
    for i in range(3):
        await cache.set(f"during{i}", i)
        await cache.delete(f"gone{i}")

    assert value(registry, "redline_cache_l2_breaker_state", "killed") == 1
    assert value(registry, "redline_cache_l2_pending_writes", "killed") == 6
    await eventually(lambda: value(registry, "redline_cache_l2_tracking", "killed") == 0)

    own_redis.restart()

    async def replayed() -> bool:
        await cache.get("-nudge-")
        return (
            value(registry, "redline_cache_l2_pending_writes", "killed") == 0
            and value(registry, "redline_cache_l2_breaker_state", "killed") == 0
        )

    await eventually(replayed, timeout=5.0)


# -- the collector --------------------------------------------------------------------------


class CountingStats:
    """A real cache whose stats() calls are counted."""

    def __init__(self, cache: SyncCache) -> None:
        self.cache = cache
        self.reads = 0

    def stats(self) -> dict[str, Any]:
        self.reads += 1
        return self.cache.stats()


def test_one_collection_reads_each_cache_once(registry):
    first, second = CountingStats(SyncCache.memory()), CountingStats(SyncCache.memory())
    monitor.instrument_cache(first, name="first", registry=registry)
    monitor.instrument_cache(second, name="second", registry=registry)

    monitor.generate_latest(registry)
    assert (first.reads, second.reads) == (1, 1)
    first.cache.set("k", 1)
    first.cache.get("k")
    exposition = monitor.generate_latest(registry).decode()
    assert (first.reads, second.reads) == (2, 2)
    assert 'redline_cache_hits_total{cache="first",tier="l1"} 1.0' in exposition


def test_names_tell_caches_apart_and_a_taken_name_is_refused(registry):
    cache = SyncCache.memory()
    metrics = monitor.instrument_cache(cache, name="pages", registry=registry)

    with pytest.raises(monitor.MetricError, match="'pages' is already exported"):
        monitor.instrument_cache(SyncCache.memory(), name="pages", registry=registry)
    assert monitor.instrument_cache(SyncCache.memory(), name="users", registry=registry) is (
        metrics
    )
    metrics.remove("users")
    assert metrics.names == ["pages"]
    assert {key[0] for key in samples(registry, "redline_cache_gets_total")} == {"pages"}


def test_a_cache_that_is_garbage_stops_being_exported(registry):
    metrics = monitor.instrument_cache(SyncCache.memory(), name="temporary", registry=registry)
    gc.collect()

    assert samples(registry, "redline_cache_gets_total") == {}
    assert metrics.names == []


def test_uninstall_removes_the_metrics_from_the_registry(registry):
    metrics = monitor.instrument_cache(SyncCache.memory(), registry=registry)
    metrics.uninstall()

    assert registry.get("redline_cache_hits_total") is None
    assert len(registry) == 0


def test_a_forked_worker_counts_from_the_reset(registry):
    cache = SyncCache.memory()
    monitor.instrument_cache(cache, registry=registry)
    cache.set("k", 1)
    cache.get("k")
    registry.reset()
    cache.get("k")
    cache.get("missing")

    assert value(registry, "redline_cache_gets_total", "default") == 2
    assert value(registry, "redline_cache_hits_total", "default", "l1") == 1
    assert value(registry, "redline_cache_l1_entries", "default") == 1  # gauges are as is


def test_workers_merge_by_the_rule_of_each_metric():
    workers = []
    for pid, (hits, misses) in enumerate([(3, 1), (1, 3)], start=100):
        registry = monitor.Registry()
        cache = SyncCache.memory()
        monitor.instrument_cache(cache, registry=registry)
        cache.set("k", 1)
        for _ in range(hits):
            cache.get("k")
        for _ in range(misses):
            cache.get("missing")
        workers.append((pid, registry.collect()))

    merged = {family.name: family.samples for family in monitor.merge_families(workers)}

    assert merged["redline_cache_gets_total"] == {("default",): 8}
    assert merged["redline_cache_hits_total"] == {("default", "l1"): 4}
    assert merged["redline_cache_l1_entries"] == {("default",): 2}
    assert merged["redline_cache_hit_ratio"][("default", "all", "100")] == 0.75
    assert merged["redline_cache_hit_ratio"][("default", "all", "101")] == 0.25
    assert merged["redline_cache_l1_max_entries"] == {("default",): 20_000}


def test_something_without_stats_is_refused(registry):
    with pytest.raises(monitor.MetricError, match="no stats"):
        monitor.instrument_cache(object(), registry=registry)
