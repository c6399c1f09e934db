"""Fixtures that run one behaviour test against both faces of the cache.

``flavour`` is parametrized over Cache (async) and SyncCache. Tests are written once, as
async tests: ``await face.get(key)`` awaits Cache's coroutine and simply calls SyncCache's
method, so the same assertions hold for both. Tests that need real concurrency (threads
for SyncCache, tasks for Cache) are written per flavour instead.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from time import monotonic
from typing import Any

import pytest
import redis

from redline.cache import Cache, RedisTier, SyncCache

# Local Redis delivers invalidation messages within a millisecond; this is a wide margin.
SETTLE = 0.1


class Face:
    """One Cache or SyncCache, driven with awaitable calls whatever its flavour."""

    def __init__(self, cache: Cache | SyncCache) -> None:
        self.cache = cache
        self.is_async = isinstance(cache, Cache)

    @property
    def l1(self) -> Any:
        return self.cache._l1

    def stats(self) -> dict[str, Any]:
        return self.cache.stats()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.cache, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            return await result if self.is_async else result

        return call

    def in_background(self, name: str, *args: Any, **kwargs: Any) -> asyncio.Task[Any]:
        """Start a call that may block (a task for Cache, a thread for SyncCache)."""
        method = getattr(self.cache, name)
        if self.is_async:
            return asyncio.ensure_future(method(*args, **kwargs))
        return asyncio.ensure_future(asyncio.to_thread(method, *args, **kwargs))

    async def ready(self) -> None:
        """Start the invalidation listener and wait until it is subscribed."""
        await self.get("-ready-")
        deadline = monotonic() + 2.0
        while not self.cache._l2.tracking:
            assert monotonic() < deadline, "the invalidation listener never subscribed"
            await asyncio.sleep(0.01)

    async def fill_l1(self, keys: list[str]) -> None:
        """Read ``keys`` back into L1 once the echoes of this cache's own writes are in.

        Redis tells every subscriber, the writer too, of every write, and the writer's L1
        drops its copy then; the next read from Redis fills L1 again.
        """
        await asyncio.sleep(SETTLE)
        await self.get_many(keys)

    async def close(self) -> None:
        if self.is_async:
            await self.cache.aclose()
        else:
            self.cache.close()


class Flavour:
    """Builds caches of one flavour on the test's Redis and closes them afterwards."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.is_async = name.startswith("async")
        self.cls: type[Cache] | type[SyncCache] = Cache if self.is_async else SyncCache
        # "async-strict" reads through the server-side check (RedisTier consistency="strict")
        # instead of MGET checked against tracked tag times.
        self.consistency = "strict" if name.endswith("strict") else "tracked"
        self._faces: list[Face] = []

    def __repr__(self) -> str:
        return self.name

    def _keep(self, cache: Cache | SyncCache) -> Face:
        face = Face(cache)
        self._faces.append(face)
        return face

    def cache(self, **options: Any) -> Face:
        """L1 + L2 on the test's Redis; RedisTier fields (e.g. tracking=False) go to the tier."""
        options.setdefault("consistency", self.consistency)
        return self._keep(self.cls.from_url(self.url, **options))

    def memory(self, **options: Any) -> Face:
        return self._keep(self.cls.memory(**options))

    def build(self, *args: Any, **kwargs: Any) -> Face:
        """The class constructor itself; ``tier()`` gives an L2 tier for the test's Redis."""
        return self._keep(self.cls(*args, **kwargs))

    def tier(self, **settings: Any) -> RedisTier:
        settings.setdefault("consistency", self.consistency)
        return RedisTier.from_url(self.url, **settings)

    async def settle(self) -> None:
        """Let pending invalidation messages (including a cache's own echo) be handled."""
        await asyncio.sleep(SETTLE)

    async def eventually(self, predicate: Callable[[], Any], timeout: float = 1.0) -> None:
        """Poll ``predicate`` (sync or async) until it is true; fail after ``timeout`` s."""
        deadline = monotonic() + timeout
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            assert monotonic() < deadline, f"not true within {timeout}s: {predicate}"
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for face in reversed(self._faces):
            await face.close()


@pytest.fixture(params=["async", "sync", "async-strict"])
async def flavour(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Flavour]:
    builder = Flavour(request.param, redis_url)
    yield builder
    await builder.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the test's Redis, to look at what the cache stored."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


class CommandStats:
    """Counts the Redis commands run between two points, from INFO commandstats.

    Commands a Lua script runs are counted too (``cmdstat_set`` moves for each SET inside
    WRITE), so an O(n) loop hidden in a script would show. INFO itself is left out.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._before: dict[str, int] = {}

    def _calls(self) -> dict[str, int]:
        stats = self._client.info("commandstats")
        return {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in stats.items()}

    def start(self) -> None:
        self._before = self._calls()

    def delta(self) -> dict[str, int]:
        """{command: calls since start()} for the commands that ran, INFO excluded."""
        after = self._calls()
        moved = {name: n - self._before.get(name, 0) for name, n in after.items()}
        return {name: n for name, n in moved.items() if n and name != "info"}

    def scripts(self) -> int:
        """EVAL and EVALSHA calls since start(): the cache's Lua round trips."""
        moved = self.delta()
        return moved.get("evalsha", 0) + moved.get("eval", 0)

    def reads(self) -> int:
        """Round trips that read entries: MGET (tracked reads) or a read script (strict)."""
        return self.scripts() + self.delta().get("mget", 0)


@pytest.fixture
def commandstats(raw: redis.Redis) -> CommandStats:
    return CommandStats(raw)
