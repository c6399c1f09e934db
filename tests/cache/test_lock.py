"""Load locks (``Cache(lock=True)``): one loader across processes sharing a Redis."""

import asyncio
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from redline.cache import Cache, RedisTier


async def _ready(*caches: Cache) -> None:
    for cache in caches:
        await cache.get("-ready-")
    deadline = time.monotonic() + 2
    while not all(cache._l2.tracking for cache in caches):
        assert time.monotonic() < deadline, "invalidation listener never subscribed"
        await asyncio.sleep(0.01)


def _pair(url: str, **options) -> tuple[Cache, Cache]:
    return tuple(Cache(l2=RedisTier.from_url(url), lock=True, **options) for _ in range(2))


async def test_a_second_process_waits_for_the_first_ones_load_instead_of_loading(redis_url):
    a, b = _pair(redis_url)
    try:
        await _ready(a, b)
        calls = []

        async def slow(name):
            calls.append(name)
            await asyncio.sleep(0.3)
            return f"from {name}"

        started = time.monotonic()
        first = asyncio.create_task(a.get_or_set("k", lambda: slow("a")))
        await asyncio.sleep(0.05)
        second = await b.get_or_set("k", lambda: slow("b"))
        assert await first == "from a"
        assert second == "from a"
        assert calls == ["a"]
        # Woken by the write's invalidation message, not by the lease running out.
        assert time.monotonic() - started < 1.0
    finally:
        await a.aclose()
        await b.aclose()


async def test_when_the_leader_fails_a_follower_loads_itself(redis_url):
    a, b = _pair(redis_url)
    try:
        await _ready(a, b)

        async def failing():
            await asyncio.sleep(0.2)
            raise RuntimeError("database down")

        first = asyncio.create_task(a.get_or_set("k", failing))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await b.get_or_set("k", lambda: "b's value") == "b's value"
        assert time.monotonic() - started < 1.0
        with pytest.raises(RuntimeError, match="database down"):
            await first
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_follower_loads_itself_once_the_lease_runs_out(redis_url):
    a, b = _pair(redis_url, lock_lease=0.3)
    try:
        await _ready(a, b)
        release = asyncio.Event()

        async def stuck():
            await release.wait()
            return "late"

        first = asyncio.create_task(a.get_or_set("k", stuck))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await b.get_or_set("k", lambda: "b's value") == "b's value"
        assert 0.2 < time.monotonic() - started < 1.5
        release.set()
        assert await first == "late"
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_lock_is_released_after_the_load(redis_url):
    cache = Cache(l2=RedisTier.from_url(redis_url), lock=True)
    try:
        await _ready(cache)
        assert await cache.get_or_set("k", lambda: 1) == 1
        with redis.Redis.from_url(redis_url) as raw:
            assert raw.keys("redline:default:1:l:*") == []
    finally:
        await cache.aclose()


WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    import redis
    from redline.cache import Cache, RedisTier

    url, start_at, lock = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"

    async def main():
        cache = Cache(l2=RedisTier.from_url(url), namespace="procs", lock=lock)
        await cache.get("-ready-")
        while not cache._l2.tracking:
            await asyncio.sleep(0.01)
        raw = redis.Redis.from_url(url)

        async def load():
            raw.incr("loads")
            await asyncio.sleep(0.3)
            return "value"

        await asyncio.sleep(max(0.0, start_at - time.time()))
        got = await asyncio.gather(*(cache.get_or_set("cold", load) for _ in range(250)))
        assert got == ["value"] * 250, got
        await cache.aclose()

    asyncio.run(main())
    """
)


def _run_processes(url: str, lock: bool) -> int:
    with redis.Redis.from_url(url) as raw:
        raw.delete("loads")
        start_at = time.time() + 3.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, url, str(start_at), "1" if lock else "0"]
            )
            for _ in range(4)
        ]
        assert [p.wait(timeout=30) for p in procs] == [0, 0, 0, 0]
        return int(raw.get("loads") or 0)


def test_four_processes_of_250_callers_load_a_cold_key_once_with_lock(redis_url):
    assert _run_processes(redis_url, lock=True) == 1


def test_without_lock_each_process_loads_once(redis_url):
    # In-process single flight still holds: at most one load per process.
    assert 1 <= _run_processes(redis_url, lock=False) <= 4


def test_sync_caches_share_one_load_across_threads_standing_for_processes(redis_url):
    from concurrent.futures import ThreadPoolExecutor

    from redline.cache import SyncCache

    a, b = (SyncCache(l2=RedisTier.from_url(redis_url), lock=True) for _ in range(2))
    try:
        for cache in (a, b):
            cache.get("-ready-")
        deadline = time.monotonic() + 2
        while not (a._l2.tracking and b._l2.tracking):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        calls = []

        def slow(name):
            calls.append(name)
            time.sleep(0.3)
            return f"from {name}"

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(a.get_or_set, "k", lambda: slow("a"))
            time.sleep(0.05)
            second = pool.submit(b.get_or_set, "k", lambda: slow("b"))
            assert (first.result(5), second.result(5)) == ("from a", "from a")
        assert calls == ["a"]
    finally:
        a.close()
        b.close()
