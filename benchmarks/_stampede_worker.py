"""One process of cache_bench.py's cross-process stampede section (a helper, not a test).

    python benchmarks/_stampede_worker.py MODE URL START_AT [CALLERS] [LOAD_S]

MODE is the contender: ``redline-lock``, ``redline``, ``cashews-lock``,
``aiocache-stampede`` (a waiting pool of 32) or ``aiocache-stampede-default`` (its default
pool). The worker sets it up (imports, connections, redline's invalidation stream) and prints
``ready``; sleeps until the wall-clock instant START_AT (``time.time()``); fires CALLERS
concurrent calls for one cold key, whose loader INCRs the Redis counter ``bench:xproc:loads``
and sleeps LOAD_S (the query); then prints one JSON line: how late it started, how long after
START_AT its last caller was done, errors by type, wrong values, warnings logged. It closes
its clients only once stdin has a line (or closes), so that closing adds nothing to the
commands the parent counts between its two INFO calls. Plain asyncio event loop.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aredis
from cache_bench import LogCounter  # this script runs from benchmarks/, beside it

COUNTER = "bench:xproc:loads"
KEY = "user:42"
VALUE = {"id": 42, "name": "alice", "email": "alice@example.com", "roles": ["admin", "dev"]}
TTL = 60
GUARD_S = 60.0
POOL_SIZE = 32  # aiocache's pool: redline's pool shape (RedisTier.pool_size), waiting not raising
MODES = (
    "redline-lock",
    "redline",
    "cashews-lock",
    "aiocache-stampede",
    "aiocache-stampede-default",
)

Call = Callable[[], Awaitable[Any]]
Close = Callable[[], Awaitable[Any]]


async def contender(mode: str, url: str, load: Callable[..., Awaitable[Any]]) -> tuple[Call, Close]:
    """``(call, close)`` for ``mode``, connected and warmed up."""
    if mode in ("redline-lock", "redline"):
        from redline.cache import Cache

        cache = Cache.from_url(url, namespace="bench-xproc", lock=mode == "redline-lock")
        await cache.get("-ready-")
        deadline = time.monotonic() + 5.0
        while not cache._l2.tracking:  # the lock needs the invalidation stream
            if time.monotonic() > deadline:
                raise RuntimeError("redline's invalidation listener never subscribed")
            await asyncio.sleep(0.01)
        return (lambda: cache.get_or_set(KEY, load, ttl=TTL)), cache.aclose
    if mode == "cashews-lock":
        from cashews import Cache as CashewsCache

        cashews = CashewsCache()
        cashews.setup(url)  # default pool: BlockingConnectionPool of 10
        await cashews.get("-ready-")
        # What cashews' README offers against a stampede across processes: @cache(lock=True)
        # (the result cached, a Redis lock around the load; in-process protection on too).
        locked = cashews(ttl=TTL, lock=True)(load)
        return (lambda: locked(42)), cashews.close
    if mode.startswith("aiocache-stampede"):
        from aiocache import RedisCache, cached_stampede
        from redis.asyncio import BlockingConnectionPool

        host, port = url.removeprefix("redis://").split("/")[0].rsplit(":", 1)
        # The default pool (redis-py's ConnectionPool of 100) raises MaxConnectionsError once
        # 100 calls are in flight; a pool of 32 that waits is what redline has.
        pool: dict[str, Any] = {}
        if mode == "aiocache-stampede":
            pool = {"pool_max_size": POOL_SIZE, "connection_pool_class": BlockingConnectionPool}
        stampede = cached_stampede(
            ttl=TTL,
            lease=2,
            namespace="bench-xproc",
            cache=RedisCache,
            endpoint=host,
            port=int(port),
            **pool,
        )(load)
        await stampede.cache.get("-ready-")
        return (lambda: stampede(42)), stampede.cache.close
    raise SystemExit(f"unknown mode {mode!r}: one of {', '.join(MODES)}")


async def main(mode: str, url: str, start_at: float, callers: int, load_s: float) -> None:
    logs = LogCounter()
    logging.getLogger().addHandler(logs)
    counter = aredis.Redis.from_url(url, protocol=2)
    await counter.ping()

    async def load(uid: int = 42) -> dict[str, Any]:
        await counter.incr(COUNTER)
        await asyncio.sleep(load_s)
        return {**VALUE, "id": uid}

    call, close = await contender(mode, url, load)
    print("ready", flush=True)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    late = time.time() - start_at
    try:
        replies = await asyncio.wait_for(
            asyncio.gather(*(call() for _ in range(callers)), return_exceptions=True), GUARD_S
        )
    except TimeoutError:
        replies = None
    done = time.time() - start_at
    report: dict[str, Any] = {"late_s": late, "done_s": done, "timed_out": replies is None}
    if replies is not None:
        raised = collections.Counter(
            type(r).__name__ for r in replies if isinstance(r, BaseException)
        )
        report["errors"] = dict(raised)
        report["wrong"] = sum(
            1 for r in replies if not isinstance(r, BaseException) and r != {**VALUE, "id": 42}
        )
    report["logged"] = dict(logs.counts)
    print(json.dumps(report), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await close()
    await counter.aclose()


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] not in MODES:
        raise SystemExit(__doc__)
    asyncio.run(
        main(
            sys.argv[1],
            sys.argv[2],
            float(sys.argv[3]),
            int(sys.argv[4]) if len(sys.argv) > 4 else 250,
            float(sys.argv[5]) if len(sys.argv) > 5 else 0.2,
        )
    )
