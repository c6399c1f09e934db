"""Redis hung, killed, restarted or slow: the cache degrades to L1 and loaders, then heals.

Every test runs on a private Redis (``own_redis``) that it freezes, kills or stalls, for both
Cache and SyncCache. The promise under test: no Redis error ever reaches the caller, a hung
Redis costs one timeout per breaker window, and nothing written or invalidated during an
outage is undone by it.
"""

import asyncio
import threading
from collections.abc import Iterator
from time import monotonic

import pytest
import redis

from redline._servers import RedisServer
from redline.cache import Cache

PREFIX = "redline:default:1:"
TIMEOUT = 0.05
# A call that found the breaker open costs microseconds; one that waited on Redis, ~TIMEOUT.
SLOW = 0.04


def redis_args() -> tuple[str, ...]:
    # Redis 7 refuses DEBUG unless told otherwise; older servers accept it and lack the option.
    major = int(RedisServer().version.split(".")[0])
    return ("--enable-debug-command", "local") if major >= 7 else ()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private Redis that also obeys DEBUG SLEEP, to stall it on demand."""
    with RedisServer(args=redis_args()) as server:
        yield server


@pytest.fixture
def flavour(own_redis, flavour):
    """The shared flavour fixture, building its caches on this test's private Redis."""
    flavour.url = own_redis.url
    return flavour


@pytest.fixture
def raw(own_redis) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(own_redis.url) as client:
        yield client


class LoaderError(Exception):
    pass


def breaker(cache) -> str:
    return cache.stats()["l2"]["breaker"]["state"]


async def recover(flavour, cache, timeout: float = 2.0) -> None:
    """Call the cache until its breaker has closed and every queued write is replayed."""

    async def healed() -> bool:
        await cache.get("-nudge-")
        l2 = cache.stats()["l2"]
        return l2["breaker"]["state"] == "closed" and l2["pending_writes"] == 0

    await flavour.eventually(healed, timeout=timeout)


# -- hung Redis ------------------------------------------------------------------------------


async def test_hung_redis_costs_one_timeout_per_breaker_window_not_one_per_call(flavour, own_redis):
    cache = flavour.cache(timeout=TIMEOUT, breaker_duration=0.5)
    await cache.ready()
    own_redis.pause()

    loaded: list[int] = []
    slow = 0
    longest = 0.0
    started = monotonic()
    for i in range(200):
        began = monotonic()
        value = await cache.get_or_set(f"k{i}", lambda i=i: loaded.append(i) or i)
        took = monotonic() - began
        assert value == i
        slow += took >= SLOW
        longest = max(longest, took)
        if i:
            assert breaker(cache) == "open"
        await asyncio.sleep(0.0075)
    elapsed = monotonic() - started

    assert loaded == list(range(200))
    assert 1 <= slow <= elapsed / 0.5 + 1, f"{slow} slow calls in {elapsed:.2f}s"
    assert longest < TIMEOUT + 0.1
    l2 = cache.stats()["l2"]
    assert l2["breaker"]["state"] == "open"
    assert 1 <= l2["errors"] <= slow  # each error is a timeout; load may slow other calls
    assert l2["skipped"] >= 300  # the reads and writes of the other calls

    own_redis.resume()
    await recover(flavour, cache)
    assert breaker(cache) == "closed"
    # L2 is in use again, both ways: another cache sees our write and we see its.
    other = flavour.cache()
    await cache.set("ours", "from the cache that lived through it")
    await other.set("theirs", "from another cache")
    assert await other.get("ours") == "from the cache that lived through it"
    hits = cache.stats()["l2"]["hits"]
    assert await cache.get("theirs") == "from another cache"
    assert cache.stats()["l2"]["hits"] == hits + 1


async def test_hung_redis_breaker_reports_open_and_counts_openings(flavour, own_redis):
    cache = flavour.cache(timeout=TIMEOUT, breaker_duration=0.2)
    await cache.ready()
    own_redis.pause()
    try:
        assert await cache.get("k", "fallback") == "fallback"
        assert cache.stats()["l2"]["breaker"] == {
            "state": "open",
            "opened": 1,
            "consecutive_failures": 1,
        }
        await asyncio.sleep(0.25)
        assert await cache.get("k", "fallback") == "fallback"  # the probe, timed out
        assert cache.stats()["l2"]["breaker"]["opened"] == 2
    finally:
        own_redis.resume()


async def test_a_cancelled_probe_does_not_keep_l2_off(own_redis):
    cache = Cache.from_url(own_redis.url, timeout=TIMEOUT, breaker_duration=0.2)
    try:
        await cache.get("-connect-")
        own_redis.pause()
        await cache.get("-open-the-breaker-")
        await asyncio.sleep(0.25)
        probe = asyncio.create_task(cache.get("probe"))
        await asyncio.sleep(0.01)
        assert breaker(cache) == "half_open"
        probe.cancel()  # e.g. the request it served was abandoned
        with pytest.raises(asyncio.CancelledError):
            await probe
        own_redis.resume()
        deadline = monotonic() + 2.0
        while breaker(cache) != "closed":
            assert monotonic() < deadline, f"L2 still off: {cache.stats()['l2']['breaker']}"
            await cache.get("-nudge-")
            await asyncio.sleep(0.02)
    finally:
        await cache.aclose()


async def test_a_probe_answered_with_a_redis_error_closes_the_breaker(flavour, own_redis, raw):
    cache = flavour.cache(timeout=TIMEOUT, breaker_duration=0.2)
    await cache.ready()
    raw.rpush(PREFIX + "k:wrong", "not a cache entry")
    assert await cache.get("wrong") is None  # WRONGTYPE is a miss, not an exception
    own_redis.pause()
    await cache.get("-open-the-breaker-")
    own_redis.resume()
    await asyncio.sleep(0.25)
    assert await cache.get("wrong") is None  # the probe: Redis answered, with an error
    await recover(flavour, cache)


# -- killed and restarted Redis --------------------------------------------------------------


async def test_killed_redis_every_operation_returns_normally_from_l1_and_loaders(
    flavour, own_redis
):
    cache = flavour.cache(breaker_duration=0.2)
    await cache.ready()
    await cache.set("held", "in L1")
    await cache.set("tagged", "in L1 too", tags=["t"])
    await cache.set("xa", 1)
    await cache.fill_l1(["held", "tagged", "xa"])
    own_redis.kill()

    began = monotonic()
    assert await cache.get("held") == "in L1"
    assert await cache.get("absent") is None
    assert await cache.get("absent", "default") == "default"
    await cache.set("a", 1)
    assert await cache.get("a") == 1
    assert await cache.get_or_set("b", lambda: 2) == 2
    assert await cache.get_or_set("b", lambda: 3) == 2
    await cache.delete("a")
    assert await cache.get("a") is None
    await cache.invalidate_tags("t")
    assert await cache.get("tagged") is None
    assert await cache.invalidate_pattern("x*") == 0  # nothing could be counted in L2
    assert await cache.get("xa") is None
    assert await cache.get_many(["held", "a", "b", "absent"]) == {"held": "in L1", "b": 2}
    await cache.set_many({"m1": 1, "m2": 2})
    assert await cache.get_many(["m1", "m2"]) == {"m1": 1, "m2": 2}
    await cache.delete_many(["m1"])
    assert await cache.get_many(["m1", "m2"]) == {"m2": 2}
    assert monotonic() - began < 1.0

    l2 = cache.stats()["l2"]
    assert l2["breaker"]["state"] == "open"
    assert l2["pending_writes"] > 0
    await flavour.eventually(lambda: not cache.stats()["l2"]["tracking"])


async def test_restarted_redis_is_used_again_by_the_same_cache_object(flavour, own_redis):
    cache = flavour.cache(breaker_duration=0.2)
    await cache.ready()
    await cache.set("k", 1)
    await cache.fill_l1(["k"])
    own_redis.kill()
    assert await cache.get("k") == 1
    await cache.set("during", 2)
    own_redis.restart()

    other = flavour.cache()
    await other.set("after", "written after the restart")
    await recover(flavour, cache)
    hits = cache.stats()["l2"]["hits"]
    assert await cache.get("after") == "written after the restart"
    assert cache.stats()["l2"]["hits"] == hits + 1
    await flavour.eventually(lambda: cache.stats()["l2"]["tracking"], timeout=2.0)
    await cache.set("mine", "written by the survivor")
    assert await other.get("mine") == "written by the survivor"


# -- writes that missed Redis are replayed ---------------------------------------------------


async def test_writes_during_a_hang_are_replayed_and_nothing_old_is_resurrected(
    flavour, own_redis, raw
):
    cache = flavour.cache(timeout=TIMEOUT, breaker_duration=0.3)
    await cache.ready()
    await cache.set("gone", "deleted during the hang")
    await cache.set("tagged", "invalidated during the hang", tags=["t"])
    await cache.set("k2", "old")
    keys = [PREFIX + "k:" + key for key in ("gone", "tagged", "k2")]
    assert raw.exists(*keys) == 3

    own_redis.pause()
    await cache.get("-open-the-breaker-")
    assert breaker(cache) == "open"
    # All three are skipped by the open breaker, so only the replay can bring them to Redis.
    await cache.delete("gone")
    await cache.invalidate_tags("t")
    await cache.set("k2", "new")
    assert cache.stats()["l2"]["pending_writes"] == 3
    assert await cache.get("k2") == "new"
    assert await cache.get("gone") is None
    assert await cache.get("tagged") is None
    own_redis.resume()

    await recover(flavour, cache)
    assert not raw.exists(PREFIX + "k:gone")
    assert not raw.exists(PREFIX + "k:k2")  # "old" is not resurrected
    assert raw.exists(PREFIX + "t:t")
    assert raw.exists(PREFIX + "k:tagged")  # still there, but stale by its tag clock
    fresh = flavour.cache()
    assert await fresh.get_many(["gone", "tagged", "k2"]) == {}
    assert await cache.get("k2") in ("new", None)  # its own L1 copy, or a miss: never "old"
    assert await cache.get("tagged") is None


async def test_value_set_during_a_hang_does_not_hide_a_later_write_by_another_process(
    flavour, own_redis
):
    cache = flavour.cache(timeout=TIMEOUT, breaker_duration=0.3)
    await cache.ready()
    own_redis.pause()
    await cache.get("-open-the-breaker-")
    await cache.set("k", "mine, never reached Redis")
    own_redis.resume()
    await recover(flavour, cache)

    other = flavour.cache()
    await other.set("k", "theirs")

    async def sees_theirs() -> bool:
        return await cache.get("k") == "theirs"

    await flavour.eventually(sees_theirs, timeout=2.0)


# -- the invalidation stream -----------------------------------------------------------------


async def test_restart_clears_l1_so_a_write_missed_meanwhile_is_never_served_stale(
    flavour, own_redis
):
    a = flavour.cache(breaker_duration=0.2)
    await a.ready()
    await a.set("k", "old")
    assert await a.get("k") == "old"
    assert "k" in a.l1.data

    own_redis.restart()  # whatever it would have told A's listener is lost
    b = flavour.cache()
    await b.set("k", "new")

    async def moved_on() -> bool:
        return await a.get("k") != "old"

    await flavour.eventually(moved_on, timeout=2.0)
    await flavour.eventually(lambda: a.stats()["l2"]["tracking"], timeout=2.0)
    seen = set()
    deadline = monotonic() + 0.5
    while monotonic() < deadline:
        seen.add(await a.get("k"))
        await asyncio.sleep(0.01)
    assert "old" not in seen
    assert await a.get("k") == "new"


async def test_l1_is_cleared_when_the_listener_resubscribes(flavour, own_redis):
    cache = flavour.cache(breaker_duration=0.2)
    await cache.ready()
    await cache.set("k", "v")
    await cache.fill_l1(["k"])
    assert "k" in cache.l1.data
    own_redis.kill()
    await flavour.eventually(lambda: not cache.stats()["l2"]["tracking"], timeout=2.0)
    assert await cache.get("k") == "v"  # no news is served from L1 while Redis is gone
    own_redis.restart()
    await flavour.eventually(lambda: cache.stats()["l2"]["tracking"], timeout=3.0)
    assert "k" not in cache.l1.data


# -- slow Redis ------------------------------------------------------------------------------


async def test_stalled_redis_calls_return_within_the_timeout(flavour, own_redis):
    cache = flavour.cache(timeout=TIMEOUT, breaker_duration=0.1)
    await cache.ready()
    staller = redis.Redis.from_url(own_redis.url)
    stall = threading.Thread(target=staller.execute_command, args=("DEBUG", "SLEEP", "0.4"))
    stall.start()
    try:
        await asyncio.sleep(0.05)  # DEBUG SLEEP has begun
        longest = 0.0
        i = 0
        deadline = monotonic() + 0.3
        while monotonic() < deadline:
            began = monotonic()
            assert await cache.get_or_set(f"g{i}", lambda i=i: i) == i
            await cache.set(f"s{i}", i)
            assert await cache.get(f"cold{i}") is None
            await cache.delete(f"s{i}")
            await cache.invalidate_tags(f"t{i}")
            longest = max(longest, monotonic() - began)
            i += 1
            await asyncio.sleep(0.005)
    finally:
        stall.join()
        staller.close()
    # Each step costs at most one timeout; the breaker makes most of them skip at once.
    assert longest < 2 * TIMEOUT + 0.1
    assert cache.stats()["l2"]["errors"] >= 1
    await recover(flavour, cache)


# -- loader errors versus Redis errors -------------------------------------------------------


@pytest.mark.parametrize("outage", ["hung", "killed"])
async def test_loader_errors_propagate_while_redis_errors_never_do(flavour, own_redis, outage):
    cache = flavour.cache(timeout=TIMEOUT, breaker_duration=0.2)
    await cache.ready()
    if outage == "hung":
        own_redis.pause()
    else:
        own_redis.kill()

    def fail():
        raise LoaderError("the database is down too")

    try:
        for _ in range(3):
            with pytest.raises(LoaderError, match="database is down"):
                await cache.get_or_set("k", fail)
        assert await cache.get_or_set("k", lambda: "loaded") == "loaded"
        assert await cache.get_or_set("k", fail) == "loaded"  # served from L1
        stats = cache.stats()
        assert stats["load_errors"] == 3
        assert stats["loads"] == 1
    finally:
        if outage == "hung":
            own_redis.resume()


async def test_connections_left_idle_across_a_restart_are_replaced_without_opening_the_breaker(
    flavour, own_redis
):
    cache = flavour.cache(timeout=TIMEOUT, tracking=False)
    # Several idle connections: concurrent reads each hold one.
    await asyncio.gather(*(cache.get(f"k{i}") for i in range(8)))
    own_redis.kill()
    own_redis.restart()

    await cache.set("after", "restart")

    assert await cache.get_many(["after"]) == {"after": "restart"}
    stats = cache.stats()["l2"]
    assert stats["breaker"]["opened"] == 0
    assert stats["errors"] == 0
