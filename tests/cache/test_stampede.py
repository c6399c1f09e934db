"""Single flight: concurrent get_or_set calls on one cold key share one load.

Concurrency differs by flavour (tasks for Cache, threads for SyncCache), so each test here
is written for the flavour it exercises.
"""

import asyncio
import threading
import time

import pytest
from helpers import in_threads

PREFIX = "redline:default:1:k:"
ASYNC = pytest.mark.parametrize("flavour", ["async"], indirect=True)
SYNC = pytest.mark.parametrize("flavour", ["sync"], indirect=True)


class LoaderFailed(Exception):
    pass


class Abort(BaseException):
    """Stands in for KeyboardInterrupt or SystemExit raised inside a loader."""


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def bump(self) -> int:
        with self._lock:
            self.n += 1
            return self.n


@ASYNC
async def test_1000_concurrent_callers_of_a_cold_key_run_the_loader_once(flavour):
    cache = flavour.cache().cache
    calls = Counter()

    async def loader():
        calls.bump()
        await asyncio.sleep(0.05)
        return {"v": 1}

    results = await asyncio.gather(*(cache.get_or_set("k", loader) for _ in range(1000)))
    assert calls.n == 1
    assert results == [{"v": 1}] * 1000


@SYNC
async def test_64_threads_on_a_cold_key_run_the_loader_once(flavour):
    cache = flavour.cache().cache
    calls = Counter()

    def loader():
        calls.bump()
        time.sleep(0.2)
        return {"v": 1}

    results = in_threads(64, lambda: cache.get_or_set("k", loader))
    assert calls.n == 1
    assert results == [{"v": 1}] * 64


@ASYNC
async def test_loader_error_reaches_all_1000_waiters_and_is_not_cached(flavour, raw):
    cache = flavour.cache().cache
    calls = Counter()

    async def failing():
        calls.bump()
        await asyncio.sleep(0.05)
        raise LoaderFailed("source down")

    results = await asyncio.gather(
        *(cache.get_or_set("k", failing) for _ in range(1000)), return_exceptions=True
    )
    assert calls.n == 1
    assert all(type(result) is LoaderFailed for result in results)
    assert not raw.exists(PREFIX + "k")
    assert cache.stats()["load_errors"] == 1

    assert await cache.get_or_set("k", lambda: "recovered") == "recovered"
    assert await cache.get("k") == "recovered"


@SYNC
async def test_loader_error_reaches_every_waiting_thread_and_is_not_cached(flavour, raw):
    cache = flavour.cache().cache
    calls = Counter()

    def failing():
        calls.bump()
        time.sleep(0.2)
        raise LoaderFailed("source down")

    results = in_threads(64, lambda: cache.get_or_set("k", failing))
    assert calls.n == 1
    assert all(type(result) is LoaderFailed for result in results)
    assert not raw.exists(PREFIX + "k")

    assert cache.get_or_set("k", lambda: "recovered") == "recovered"
    assert cache.get("k") == "recovered"


@ASYNC
async def test_cache_accepts_plain_and_async_loaders(flavour):
    cache = flavour.cache().cache

    async def async_loader():
        return "from coroutine"

    assert await cache.get_or_set("plain", lambda: "from function") == "from function"
    assert await cache.get_or_set("async", async_loader) == "from coroutine"
    assert await cache.get("plain") == "from function"
    assert await cache.get("async") == "from coroutine"


@SYNC
async def test_sync_cache_refuses_an_async_loader_and_caches_nothing(flavour, raw):
    cache = flavour.cache().cache

    async def async_loader():
        return "never"

    with pytest.raises(TypeError, match="use redline.cache.Cache for async loaders"):
        cache.get_or_set("k", async_loader)
    assert not raw.exists(PREFIX + "k")
    assert cache.get_or_set("k", lambda: "plain") == "plain"


@ASYNC
async def test_a_cancelled_leader_does_not_strand_its_waiters(flavour):
    cache = flavour.cache().cache
    calls = Counter()
    started = asyncio.Event()

    async def loader():
        if calls.bump() == 1:
            started.set()
            await asyncio.sleep(30)
        return "v"

    leader = asyncio.create_task(cache.get_or_set("k", loader))
    await started.wait()
    waiters = [asyncio.create_task(cache.get_or_set("k", loader)) for _ in range(10)]
    await asyncio.sleep(0.01)  # the waiters are now waiting on the leader's flight
    leader.cancel()

    results = await asyncio.wait_for(asyncio.gather(*waiters), timeout=2)
    assert results == ["v"] * 10
    assert calls.n == 2
    with pytest.raises(asyncio.CancelledError):
        await leader


@ASYNC
async def test_a_cancelled_waiter_does_not_cancel_the_shared_load(flavour):
    cache = flavour.cache().cache
    calls = Counter()

    async def loader():
        calls.bump()
        await asyncio.sleep(0.1)
        return "v"

    leader = asyncio.create_task(cache.get_or_set("k", loader))
    await asyncio.sleep(0.01)
    quitter = asyncio.create_task(cache.get_or_set("k", loader))
    stayer = asyncio.create_task(cache.get_or_set("k", loader))
    await asyncio.sleep(0.01)
    quitter.cancel()

    assert await asyncio.wait_for(leader, timeout=2) == "v"
    assert await asyncio.wait_for(stayer, timeout=2) == "v"
    assert quitter.cancelled()
    assert calls.n == 1


@SYNC
async def test_a_leader_interrupted_by_base_exception_does_not_strand_waiting_threads(flavour):
    cache = flavour.cache().cache
    calls = Counter()
    started = threading.Event()

    def loader():
        if calls.bump() == 1:
            started.set()
            time.sleep(0.2)  # the other threads join the flight meanwhile
            raise Abort
        return "v"

    leader_result: list[BaseException] = []

    def lead():
        try:
            cache.get_or_set("k", loader)
        except Abort as exc:
            leader_result.append(exc)

    leader = threading.Thread(target=lead)
    leader.start()
    assert started.wait(timeout=2)
    results = in_threads(16, lambda: cache.get_or_set("k", loader))
    leader.join(timeout=5)

    assert results == ["v"] * 16
    assert calls.n == 2
    assert len(leader_result) == 1
