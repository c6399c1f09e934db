"""Races and leaks found in review, each pinned by the behaviour the fix must keep.

Every race is forced with real Redis and real timing, not by mocking Redis:

- ``CLIENT PAUSE ... WRITE`` holds writes from several connections and ``CLIENT UNPAUSE``
  releases them together, so Redis runs them in one event-loop pass and sends one
  invalidation message for the key, as it does under load;
- a loopback TCP proxy adds network latency;
- blocking the event loop makes two timers fire in the same pass.

Where only an internal await point can widen a window (a read waiting for tag times, the
pool's idle list), a test holds that one call and says so.
"""

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from helpers import in_threads

from redline.cache import Cache, MemoryTier, RedisTier, SyncCache, _tags

ASYNC = pytest.mark.parametrize("flavour", ["async", "async-strict"], indirect=True)
SYNC = pytest.mark.parametrize("flavour", ["sync"], indirect=True)
# Reads checked against tag times tracked here: only they wait for unknown tag times.
TRACKED = pytest.mark.parametrize("flavour", ["async", "sync"], indirect=True)

# Long enough that no test waits this long unless something is broken.
HOLD = 2.0


async def sees(face, key: str, value: Any) -> bool:
    return await face.get(key) == value


@contextlib.contextmanager
def writes_held(raw: redis.Redis) -> Iterator[None]:
    """Hold every client's writes in Redis; on exit, release them to run in one pass.

    Reads, subscriptions and a new connection's handshake are not held.
    """
    raw.client_pause(int(HOLD * 1000), all=False)
    try:
        yield
    finally:
        raw.client_unpause()


async def until_held(flavour, raw: redis.Redis, n: int) -> None:
    """Wait until ``n`` commands are held by the pause, so their order in Redis is known."""
    await flavour.eventually(lambda: raw.info("clients")["blocked_clients"] >= n)


class Gate:
    """Holds the first call of a cache backend's ``method`` until :meth:`open` (or HOLD s).

    This patches redline: a read waiting for the times of tags it has not seen is an
    internal await point, and holding it there widens the window a slow round trip opens
    in production. Nothing about Redis is faked; the held call then runs for real.
    """

    def __init__(self, face, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self._opened = threading.Event()
        self._lock = threading.Lock()
        backend = face.cache._l2
        original = getattr(backend, method)

        if face.is_async:

            async def held(*args: Any) -> Any:
                if self._first():
                    deadline = time.monotonic() + HOLD
                    while not self._opened.is_set() and time.monotonic() < deadline:
                        await asyncio.sleep(0.001)
                return await original(*args)

        else:

            def held(*args: Any) -> Any:
                if self._first():
                    self._opened.wait(HOLD)
                return original(*args)

        monkeypatch.setattr(backend, method, held)

    def _first(self) -> bool:
        with self._lock:
            if self.entered.is_set():
                return False
            self.entered.set()
            return True

    async def reached(self, flavour) -> None:
        await flavour.eventually(self.entered.is_set, timeout=HOLD)

    def open(self) -> None:
        self._opened.set()


class SlowProxy:
    """A loopback TCP proxy to Redis that delays every chunk by ``delay`` s each way.

    A new connection also waits one round trip before it is forwarded, like a TCP handshake.
    It runs its own event loop in a thread, so blocking SyncCache calls can use it too.
    """

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._serve, name="slow-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> "SlowProxy":
        self._thread.start()
        assert self._ready.wait(HOLD), "the proxy did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(HOLD)

    def _serve(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        # Closing both ends of every connection lets each handler run to its end.
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            await asyncio.sleep(2 * self.delay)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


# -- our own writes and their invalidation messages ------------------------------------------


async def test_a_foreign_write_in_the_same_redis_pass_as_ours_still_evicts_our_l1_copy(
    flavour, raw
):
    a = flavour.cache(timeout=HOLD)
    b = flavour.cache(timeout=HOLD)
    redis_only = flavour.build(l1=None, l2=flavour.tier())
    await a.ready()
    await b.ready()
    # Loads the write script (a NOSCRIPT retry would split the pass) and leaves each cache
    # an idle connection.
    await a.set("k", "before")
    await b.set("k", "before")
    await flavour.settle()

    with writes_held(raw):
        ours = a.in_background("set", "k", "ours")
        await until_held(flavour, raw, 1)
        theirs = b.in_background("set", "k", "theirs")
        await until_held(flavour, raw, 2)
    # Redis ran both in one pass and sent one invalidation message for "k".
    await asyncio.gather(ours, theirs)
    await flavour.settle()

    assert await redis_only.get("k") == "theirs"
    assert await a.get("k") == "theirs"


async def test_two_of_our_writes_in_one_redis_pass_do_not_hide_a_later_foreign_write(flavour, raw):
    a = flavour.cache(timeout=HOLD)
    b = flavour.cache()
    await a.ready()
    await b.ready()
    await b.set("warm", 0)  # loads the write script: a NOSCRIPT retry would split the pass

    with writes_held(raw):
        first = a.in_background("set", "k", "a1")
        await until_held(flavour, raw, 1)
        second = a.in_background("set", "k", "a2")
        await until_held(flavour, raw, 2)
    # Two writes of ours, one invalidation message.
    await asyncio.gather(first, second)
    await flavour.settle()

    await b.set("k", "from-b")
    await flavour.eventually(lambda: sees(a, "k", "from-b"))


@ASYNC
async def test_a_set_cancelled_before_it_reached_redis_does_not_hide_the_next_foreign_write(
    flavour, raw
):
    a = flavour.cache(timeout=HOLD, pool_size=1)
    b = flavour.cache()
    await a.ready()
    await b.ready()
    await b.set("k", "v0")
    await flavour.settle()
    assert await a.get("k") == "v0"  # now in a's L1

    with writes_held(raw):
        busy = a.in_background("set", "other", 1)  # holds a's only connection
        await until_held(flavour, raw, 1)
        # The caller gives up (a request timeout) while the set waits for a connection.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(a.cache.set("k", "mine"), 0.05)
    await busy

    await b.set("k", "new")
    await flavour.eventually(lambda: sees(a, "k", "new"))


# -- reads in flight ---------------------------------------------------------------------------


@TRACKED
async def test_a_read_in_flight_does_not_put_back_in_l1_a_value_our_own_write_replaced(
    flavour, monkeypatch
):
    writer = flavour.build(l1=None, l2=flavour.tier())
    a = flavour.cache()
    await a.ready()
    await writer.set("k", "old", tags=["t"])  # a has never read the time of tag "t"
    await flavour.settle()

    gate = Gate(a, "tag_times", monkeypatch)
    read = a.in_background("get", "k")
    await gate.reached(flavour)  # a has read "old" and now asks for the time of "t"
    await a.set("k", "new", tags=["t"])
    gate.open()
    await read
    await flavour.settle()

    assert await a.get("k") == "new"


@TRACKED
async def test_a_read_in_flight_does_not_put_back_in_l1_a_value_another_cache_replaced(
    flavour, monkeypatch
):
    b = flavour.cache()
    a = flavour.cache()
    await a.ready()
    await b.ready()
    await b.set("k", "old", tags=["t"])  # a has never read the time of tag "t"
    await flavour.settle()

    gate = Gate(a, "tag_times", monkeypatch)
    read = a.in_background("get", "k")
    await gate.reached(flavour)  # a has read "old" and now asks for the time of "t"
    await b.set("k", "new", tags=["t"])
    await flavour.settle()  # b's invalidation message reaches a while its read is held
    gate.open()
    await read
    await flavour.settle()

    assert await a.get("k") == "new"


@TRACKED
async def test_a_read_in_flight_still_fills_l1_when_other_keys_change_meanwhile(
    flavour, monkeypatch
):
    # Under load some key changes at every moment: a change of another key must not keep
    # this read's value out of L1 (one counter for the whole cache once did, and L1 stayed
    # nearly empty under concurrent traffic).
    b = flavour.cache()
    a = flavour.cache()
    await a.ready()
    await b.ready()
    await b.set("k", "value", tags=["t"])  # a has never read the time of tag "t"
    await flavour.settle()

    gate = Gate(a, "tag_times", monkeypatch)
    read = a.in_background("get", "k")
    await gate.reached(flavour)  # a has read "k" and now asks for the time of "t"
    await a.set("ours", 1)  # our own write of another key
    await b.set("theirs", 2)  # and another cache's, whose message reaches a
    await a.delete("gone")
    await flavour.settle()
    gate.open()
    assert await read == "value"

    before = a.stats()["l1"]["hits"]
    assert await a.get("k") == "value"
    assert a.stats()["l1"]["hits"] == before + 1  # served from L1, not Redis


# -- timeouts and cancellation -----------------------------------------------------------------


async def test_a_new_connection_may_take_connect_timeout_while_each_command_keeps_timeout(
    flavour, redis_server, raw
):
    # 30 ms round trips fit timeout=0.08; a new connection's handshake and setup do not.
    with SlowProxy(redis_server.port, delay=0.015) as proxy:
        tier = RedisTier(
            proxy.url,
            timeout=0.08,
            connect_timeout=1.0,
            tracking=False,
            breaker_duration=0.2,
            consistency=flavour.consistency,
        )
        cache = flavour.build(l1=None, l2=tier)
        for i in range(3):
            await cache.set("k", i)
            assert await cache.get("k") == i
        assert cache.stats()["l2"]["errors"] == 0

        raw.client_pause(400)  # every command hangs; the connection is already open
        started = time.monotonic()
        assert await cache.get("k") is None
        assert time.monotonic() - started < 0.5  # timeout, not connect_timeout
        assert cache.stats()["l2"]["errors"] == 1


@pytest.mark.parametrize("flavour", ["async"], indirect=True)
async def test_an_outside_cancel_landing_with_the_command_deadline_still_cancels_the_caller(
    flavour, own_redis
):
    timeout = 0.05  # the deadline watchdog ticks every timeout / 4
    flavour.url = own_redis.url
    cache = flavour.build(
        l1=None, l2=flavour.tier(tracking=False, timeout=timeout, breaker_duration=0.01)
    )
    await cache.get("warm")
    went_on: list[Any] = []

    async def handler() -> None:
        value = await cache.get("k")
        # Resuming with a cancel requested means the cache swallowed it. Resuming without one
        # is allowed: on a slow machine the deadline may fire a pass before the cancel does.
        went_on.append((value, asyncio.current_task().cancelling()))  # type: ignore[union-attr]
        await asyncio.sleep(0.1)

    own_redis.pause()
    try:
        task = asyncio.ensure_future(handler())
        await asyncio.sleep(0.005)  # its read is sent and hangs
        # The outside cancel is a timer due after the watchdog's next tick; blocking the
        # loop past the deadline makes both fire in one pass: the watchdog cancels the
        # read for its deadline, then the outside cancel lands before the task resumes.
        asyncio.get_running_loop().call_later(timeout / 2, task.cancel)
        time.sleep(2 * timeout)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, HOLD)
    finally:
        own_redis.resume()
    assert [cancels for _, cancels in went_on if cancels] == []


# -- resources ---------------------------------------------------------------------------------


async def test_a_readers_tag_clock_stays_bounded_while_another_cache_invalidates_20k_tags(
    flavour, monkeypatch
):
    monkeypatch.setattr(_tags, "PRUNE_EVERY", 0.1, raising=False)
    # Tag times older than twice the L1 ttl (0.5 s) can no longer make an L1 entry stale.
    reader = flavour.build(MemoryTier(ttl=0.25), flavour.tier())
    # 1000 tags a call can outlast the default 50 ms timeout on a busy CI core; a timeout
    # would open the invalidator's breaker and skip the sentinel's write this test waits on.
    invalidator = flavour.build(l1=None, l2=flavour.tier(tracking=False, timeout=5.0))
    await reader.ready()
    await invalidator.set("sentinel", 1)
    await flavour.settle()
    assert await reader.get("sentinel") == 1
    assert "sentinel" in reader.l1.data

    def known() -> dict[str, float]:
        return reader.cache._tags._times

    for start in range(0, 20_000, 1000):
        await invalidator.invalidate_tags(*(f"user:{i}" for i in range(start, start + 1000)))
    # Messages arrive in order: once the sentinel's is handled, so are the 20k tags'.
    await invalidator.set("sentinel", 2)
    assert invalidator.stats()["l2"]["skipped"] == 0  # the write reached Redis
    await flavour.eventually(
        lambda: "sentinel" not in reader.l1.data, timeout=HOLD * 8
    )  # 20k messages on a busy shared CI core: seconds, not a bound on the cache

    # A trickle of invalidations goes on, as in production, while the old times age out.
    deadline = time.monotonic() + 3.0
    tick = 0
    while len(known()) >= 1000 and time.monotonic() < deadline:
        await invalidator.invalidate_tags(f"tick:{tick}")
        tick += 1
        await asyncio.sleep(0.05)
    held = len(known())
    assert held < 1000


def test_a_cache_used_again_from_a_second_event_loop_reads_redis_and_hears_invalidations(
    redis_url,
):
    cache = Cache.from_url(redis_url)
    writer = SyncCache(l1=None, l2=RedisTier.from_url(redis_url))

    async def tracking(timeout: float = HOLD) -> bool:
        deadline = time.monotonic() + timeout
        while not cache.stats()["l2"]["tracking"] and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return cache.stats()["l2"]["tracking"]

    async def first_loop() -> None:
        await cache.set("mine", 1)
        assert await cache.get("mine") == 1
        assert await tracking()

    async def second_loop() -> None:
        try:
            hits = cache.stats()["l2"]["hits"]
            assert await cache.get("theirs") == 2  # from Redis: never in this L1
            assert cache.stats()["l2"]["hits"] == hits + 1
            assert await tracking()  # the listener runs again, in this loop
            assert await cache.get("theirs") == 2  # now in L1, watched
            writer.set("theirs", 3)
            deadline = time.monotonic() + 1.0
            while await cache.get("theirs") != 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert await cache.get("theirs") == 3
            assert cache.stats()["l2"]["errors"] == 0
        finally:
            await cache.aclose()

    try:
        asyncio.run(first_loop())
        writer.set("theirs", 2)
        asyncio.run(second_loop())
    finally:
        writer.close()


@SYNC
async def test_threads_racing_for_the_last_idle_connection_never_get_an_error(flavour):
    cache = flavour.build(l1=None, l2=flavour.tier(tracking=False, timeout=1.0)).cache
    cache.get("warm")  # leaves one idle connection
    backend = cache._l2
    # CPython 3.11 never switches threads between the pool's "is a connection idle?" and
    # taking it, so this patches redline: the idle list's truth test sleeps, as a thread
    # switch there (free-threaded Python, or any code added between) would.
    idle_type = type(backend._idle)

    class SlowToAnswer(idle_type):  # type: ignore[valid-type,misc]
        def __bool__(self) -> bool:
            answer = len(self) > 0
            time.sleep(0.002)
            return answer

    backend._idle = SlowToAnswer(backend._idle)

    results = in_threads(8, lambda: cache.get("k", "missing"), timeout=HOLD * 5)
    assert results == ["missing"] * 8
