"""Cache benchmark: redline against dict, functools, cachetools, cashews and aiocache.

Everything runs in one process, side by side, against one throwaway Redis, so that ratios
stay comparable where absolute times are noisy; only the cross-process stampede starts worker
processes (benchmarks/_stampede_worker.py). Usage:

    python benchmarks/cache_bench.py [--quick] [--json out.json] [--pin none|split|same]
                                     [--only sync|async|stampede|xproc|hung ...]

Each contender is calibrated first (which also warms it up) to N operations lasting about
0.3 s; then the contenders of a section run in turn, 5 rounds, and each reports the median.
Interleaving the rounds spreads machine noise over all contenders instead of one.
Garbage collection stays on: it is part of what a caller pays. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import functools
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from itertools import repeat
from pathlib import Path
from time import perf_counter, perf_counter_ns
from typing import Any

import cachetools
import msgpack
import redis
import redis.asyncio as aredis
import uvloop
from aiocache import RedisCache, SimpleMemoryCache
from aiocache import cached as aiocache_cached
from aiocache import cached_stampede as aiocache_cached_stampede
from cashews import Cache as CashewsCache
from rich.console import Console
from rich.table import Table
from rich.text import Text

from redline._servers import RedisServer
from redline.cache import Cache, RedisTier, SyncCache

KEY = "user:42"
VALUE = {"id": 42, "name": "alice", "email": "alice@example.com", "roles": ["admin", "dev"]}
POOL_SIZE = RedisTier.pool_size  # the raw client gets redline's pool shape
SYNC_L1_TARGET_NS = 200.0
ASYNC_L1_TARGET_NS = 500.0
L2_TARGET_RATIO = 1.10
GET_MANY_TARGET_SPEEDUP = 10.0
STAMPEDE_LOAD_S = 0.05
XPROC_LOAD_S = 0.2
XPROC_COUNTER = "bench:xproc:loads"  # the workers' loaders INCR it: loader calls, exactly
XPROC_WORKER = Path(__file__).with_name("_stampede_worker.py")
SECTIONS = ("sync", "async", "stampede", "xproc", "hung")


@dataclass(frozen=True)
class Settings:
    repeats: int = 5
    repeat_s: float = 0.3
    calibrate_s: float = 0.05
    concurrency: int = 100
    batch: int = 100
    stampede_callers: int = 1000
    hung_calls: int = 20
    rival_hung_calls: int = 2
    rival_hung_guard_s: float = 25.0
    xproc_processes: int = 4
    xproc_callers: int = 250
    xproc_lead_s: float = 3.0  # start instant this far ahead: imports and connections are done


FULL = Settings()
QUICK = Settings(repeats=3, repeat_s=0.05, calibrate_s=0.01, rival_hung_calls=0)


@dataclass
class Result:
    """One row. ``ns`` is the time per op (per key for batch rows, per call for hung rows)."""

    section: str
    name: str
    ns: float | None = None
    count: int | None = None  # stampede rows: loader calls
    wall_s: float | None = None  # cross-process stampede rows: start instant to last caller done
    commands: int | None = None  # cross-process stampede rows: Redis commands processed
    per: str = "op"
    ref: bool = False
    anchor_ns: float | None = None
    anchor_text: str = ""
    target: str = ""
    passed: bool | None = None
    note: str = ""
    show_rate: bool = True
    samples_ns: list[float] = field(default_factory=list)


class LogCounter(logging.Handler):
    """Counts (instead of printing) what the libraries log at WARNING and above."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.name.split(".")[0]] += 1

    def since(self, before: collections.Counter[str]) -> str:
        logged = self.counts - before
        return ", ".join(f"{name} logged {n} warnings/errors" for name, n in logged.items())


LOGS = LogCounter()


# -- timing ----------------------------------------------------------------------------------

Run = Callable[[int], int]  # run(n) performs n ops and returns the elapsed ns
AsyncRun = Callable[[int], Awaitable[int]]


@dataclass
class Case:
    """One contender of a section: ``run(n)`` does n ops of ``units`` keys each."""

    name: str
    run: Any
    units: int = 1
    fields: dict[str, Any] = field(default_factory=dict)


def _next_size(n: int, elapsed: int, s: Settings) -> tuple[int, bool]:
    """(next n, done): grow n until it lasts ``calibrate_s``, then size it to ``repeat_s``."""
    if elapsed >= s.calibrate_s * 1e9:
        return max(1, round(n * s.repeat_s * 1e9 / elapsed)), True
    return n * (10 if elapsed < s.calibrate_s * 1e8 else 2), False


def measure(section: str, cases: list[Case], s: Settings) -> list[Result]:
    sizes = []
    for case in cases:
        n, done = 1, False
        while not done:
            n, done = _next_size(n, case.run(n), s)
        sizes.append(n)
    samples: list[list[float]] = [[] for _ in cases]
    for _ in range(s.repeats):
        for case, n, out in zip(cases, sizes, samples, strict=True):
            out.append(case.run(n) / (n * case.units))
    return [_row(section, case, out) for case, out in zip(cases, samples, strict=True)]


async def measure_async(section: str, cases: list[Case], s: Settings) -> list[Result]:
    sizes = []
    for case in cases:
        n, done = 1, False
        while not done:
            n, done = _next_size(n, await case.run(n), s)
        sizes.append(n)
    samples: list[list[float]] = [[] for _ in cases]
    for _ in range(s.repeats):
        for case, n, out in zip(cases, sizes, samples, strict=True):
            out.append(await case.run(n) / (n * case.units))
    return [_row(section, case, out) for case, out in zip(cases, samples, strict=True)]


def _row(section: str, case: Case, samples: list[float]) -> Result:
    return Result(
        section, case.name, ns=statistics.median(samples), samples_ns=samples, **case.fields
    )


def call_loop(call: Callable[[Any], Any], arg: Any) -> Run:
    def run(n: int) -> int:
        start = perf_counter_ns()
        for _ in repeat(None, n):
            call(arg)
        return perf_counter_ns() - start

    return run


def subscript_loop(mapping: Any, key: Any) -> Run:
    def run(n: int) -> int:
        start = perf_counter_ns()
        for _ in repeat(None, n):
            mapping[key]  # noqa: B018 - the lookup is what is timed
        return perf_counter_ns() - start

    return run


def empty_loop(n: int) -> int:
    start = perf_counter_ns()
    for _ in repeat(None, n):
        pass
    return perf_counter_ns() - start


def await_loop(call: Callable[[Any], Awaitable[Any]], arg: Any, tasks: int = 1) -> AsyncRun:
    """``await call(arg)`` n times, in one coroutine or spread over ``tasks`` tasks."""

    async def worker(count: int) -> None:
        for _ in repeat(None, count):
            await call(arg)

    async def run(n: int) -> int:
        start = perf_counter_ns()
        if tasks == 1:
            await worker(n)
        else:
            share, extra = divmod(n, tasks)
            await asyncio.gather(*(worker(share + (i < extra)) for i in range(tasks)))
        return perf_counter_ns() - start

    return run


def row(results: list[Result], name: str) -> Result:
    return next(r for r in results if r.name == name)


# -- helpers ---------------------------------------------------------------------------------


def settle_sync(cache: SyncCache, read: Callable[[], Any]) -> int:
    """Wait until ``read`` is served by L1 (our own write's invalidation echo has passed).

    Returns the L2 hit count, for :func:`l1_note`.
    """
    time.sleep(0.2)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        read()
        before = cache.stats()["l2"]["hits"]
        read()
        if cache.stats()["l2"]["hits"] == before:
            return before
        time.sleep(0.05)
    raise RuntimeError("the value never settled in L1: is invalidation tracking working?")


async def settle_async(cache: Cache, read: Callable[[], Awaitable[Any]]) -> int:
    await asyncio.sleep(0.2)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        await read()
        before = cache.stats()["l2"]["hits"]
        await read()
        if cache.stats()["l2"]["hits"] == before:
            return before
        await asyncio.sleep(0.05)
    raise RuntimeError("the value never settled in L1: is invalidation tracking working?")


def l1_note(cache: Cache | SyncCache, before: int) -> str:
    reads = cache.stats()["l2"]["hits"] - before
    return "" if reads <= 1 else f"{reads} reads went to L2 during the timing (not pure L1)"


def l2_health(cache: Cache) -> tuple[int, int]:
    l2 = cache.stats()["l2"]
    return l2["errors"], l2["skipped"]


def health_note(cache: Cache, before: tuple[int, int]) -> str:
    errors, skipped = (now - was for now, was in zip(l2_health(cache), before, strict=True))
    if errors or skipped:
        return f"INVALID: {errors} L2 errors, {skipped} ops skipped by the breaker"
    return ""


def raw_client(url: str) -> aredis.Redis:
    """redis-py asyncio as it comes (plain pool, no timeouts), RESP2, hiredis parser.

    The cheapest GET redis-py offers: the reference redline's Redis reads are held to.
    """
    return aredis.Redis.from_url(url, protocol=2)


def raw_blocking_client(url: str) -> aredis.Redis:
    """redis-py asyncio with a bounded pool that waits (BlockingConnectionPool)."""
    pool = aredis.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, protocol=2)
    return aredis.Redis(connection_pool=pool)


def cashews_cache(url: str) -> CashewsCache:
    cache = CashewsCache()
    cache.setup(url)
    return cache


def aiocache_redis(server: RedisServer, **options: Any) -> RedisCache:
    return RedisCache(endpoint=server.host, port=server.port, **options)


def user(uid: int) -> dict[str, Any]:
    return {**VALUE, "id": uid}


async def auser(uid: int) -> dict[str, Any]:
    return {**VALUE, "id": uid}


# -- sections --------------------------------------------------------------------------------


def sync_sections(server: RedisServer, s: Settings) -> list[Result]:
    plain = {KEY: VALUE}
    lru = cachetools.LRUCache(maxsize=10_000)
    ttl = cachetools.TTLCache(maxsize=10_000, ttl=300)
    lru[KEY] = ttl[KEY] = VALUE
    memory = SyncCache.memory()
    memory.set(KEY, VALUE)
    tiered = SyncCache.from_url(server.url, namespace="bench-sync")
    try:
        tiered.set(KEY, VALUE)
        before = settle_sync(tiered, lambda: tiered.get(KEY))
        results = measure(
            "sync in-memory hit",
            [
                Case(
                    "empty for-loop (overhead in every row)",
                    empty_loop,
                    fields={"show_rate": False},
                ),
                Case(
                    "dict.get", call_loop(plain.get, KEY), fields={"ref": True, "anchor_ns": 30.0}
                ),
                Case(
                    "cachetools LRUCache[key]",
                    subscript_loop(lru, KEY),
                    fields={"anchor_ns": 163.0},
                ),
                Case(
                    "cachetools TTLCache[key]",
                    subscript_loop(ttl, KEY),
                    fields={"anchor_ns": 327.0},
                ),
                Case(
                    "cachetools TTLCache.get", call_loop(ttl.get, KEY), fields={"anchor_ns": 1120.0}
                ),
                Case("redline SyncCache.get  (SyncCache.memory)", call_loop(memory.get, KEY)),
                Case("redline SyncCache.get  (from_url, L1 hit)", call_loop(tiered.get, KEY)),
            ],
            s,
        )
        row(results, "redline SyncCache.get  (from_url, L1 hit)").note = l1_note(tiered, before)
        for result in results:
            if result.name.startswith("redline"):
                result.target = f"<= {SYNC_L1_TARGET_NS:.0f} ns"
                result.passed = result.ns <= SYNC_L1_TARGET_NS
        return results + sync_decorators(memory, tiered, s)
    finally:
        tiered.close()
        memory.close()


def sync_decorators(memory: SyncCache, tiered: SyncCache, s: Settings) -> list[Result]:
    lru_user = functools.lru_cache(maxsize=10_000)(user)
    tools_user = cachetools.cached(cachetools.LRUCache(maxsize=10_000))(user)
    memory_user = memory.cached(ttl=300)(user)
    tiered_user = tiered.cached(ttl=300)(user)
    memory_user(42)
    tiered_user(42)
    before = settle_sync(tiered, lambda: tiered_user(42))
    results = measure(
        "sync decorator hit",
        [
            Case(
                "functools.lru_cache",
                call_loop(lru_user, 42),
                fields={"ref": True, "anchor_ns": 46.0},
            ),
            Case(
                "cachetools @cached(LRUCache)",
                call_loop(tools_user, 42),
                fields={"anchor_ns": 400.0},
            ),
            Case("redline SyncCache.memory @cached", call_loop(memory_user, 42)),
            Case("redline SyncCache.from_url @cached (L1)", call_loop(tiered_user, 42)),
        ],
        s,
    )
    row(results, "redline SyncCache.from_url @cached (L1)").note = l1_note(tiered, before)
    return results


async def memory_sections(server: RedisServer, loop: str, s: Settings) -> list[Result]:
    plain = {KEY: VALUE}

    async def floor(key: str) -> Any:
        return plain.get(key)

    memory = Cache.memory()
    tiered = Cache.from_url(server.url, namespace=f"bench-mem-{loop}")
    cashews = cashews_cache("mem://")
    aio = SimpleMemoryCache()
    try:
        for cache in (memory, tiered, cashews, aio):
            await cache.set(KEY, VALUE)
        before = await settle_async(tiered, lambda: tiered.get(KEY))
        results = await measure_async(
            f"async in-memory hit [{loop}]",
            [
                Case("await coroutine(dict.get) (floor)", await_loop(floor, KEY)),
                Case(
                    "redline await Cache.get  (Cache.memory)",
                    await_loop(memory.get, KEY),
                    fields={"ref": True},
                ),
                Case("redline await Cache.get  (from_url, L1 hit)", await_loop(tiered.get, KEY)),
                Case(
                    "cashews mem:// await get",
                    await_loop(cashews.get, KEY),
                    fields={"anchor_ns": 5200.0},
                ),
                Case(
                    "aiocache SimpleMemoryCache await get",
                    await_loop(aio.get, KEY),
                    fields={"anchor_ns": 17_000.0},
                ),
            ],
            s,
        )
        row(results, "redline await Cache.get  (from_url, L1 hit)").note = l1_note(tiered, before)
        for result in results:
            if result.name.startswith("redline"):
                result.target = f"<= {ASYNC_L1_TARGET_NS / 1000:.1f} µs"
                result.passed = result.ns <= ASYNC_L1_TARGET_NS
        return results + await async_decorators(loop, memory, cashews, s)
    finally:
        await tiered.aclose()
        await memory.aclose()
        await cashews.close()
        await aio.close()


async def async_decorators(
    loop: str, memory: Cache, cashews: CashewsCache, s: Settings
) -> list[Result]:
    redline_user = memory.cached(ttl=300)(auser)
    cashews_user = cashews(ttl=300)(auser)
    aiocache_user = aiocache_cached(ttl=300)(auser)
    for fn in (redline_user, cashews_user, aiocache_user):
        await fn(42)
    try:
        return await measure_async(
            f"async decorator hit [{loop}]",
            [
                Case(
                    "redline Cache.memory @cached",
                    await_loop(redline_user, 42),
                    fields={"ref": True},
                ),
                Case(
                    "cashews mem:// @cache (protected, default)",
                    await_loop(cashews_user, 42),
                    fields={"anchor_ns": 29_000.0},
                ),
                Case("aiocache @cached (SimpleMemoryCache)", await_loop(aiocache_user, 42)),
            ],
            s,
        )
    finally:
        await aiocache_user.cache.close()


RAW = "raw redis-py GET (default client, RESP2, hiredis)"
RAW_BLOCKING = f"raw redis-py GET (BlockingConnectionPool of {POOL_SIZE})"
REDLINE_L2 = "redline Cache(l1=None).get (tracked: one MGET)"
REDLINE_L2_STRICT = "redline Cache(l1=None, strict).get (READ script)"


async def l2_sections(server: RedisServer, loop: str, s: Settings) -> list[Result]:
    raw = raw_client(server.url)
    raw_blocking = raw_blocking_client(server.url)
    rl = Cache(l1=None, l2=RedisTier.from_url(server.url), namespace=f"bench-l2-{loop}")
    strict = Cache(
        l1=None,
        l2=RedisTier.from_url(server.url, consistency="strict"),
        namespace=f"bench-l2-{loop}",
    )
    cashews = cashews_cache(server.url)
    aio = aiocache_redis(server)
    keys = {"raw": f"bench:raw:{KEY}", "cashews": f"bench:cashews:{KEY}", "aio": f"bench:aio:{KEY}"}
    try:
        await raw.set(keys["raw"], msgpack.packb(VALUE))
        await rl.set(KEY, VALUE)
        await strict.get(KEY)
        # Tracked reads need the invalidation stream up; until then they take the script.
        for _ in range(200):
            if rl._l2.tracking:
                break
            await asyncio.sleep(0.01)
        await cashews.set(keys["cashews"], VALUE)
        await aio.set(keys["aio"], VALUE)
        for got in (
            await rl.get(KEY),
            await cashews.get(keys["cashews"]),
            await aio.get(keys["aio"]),
        ):
            assert got == VALUE, got
        results = []
        sequential = (104e3, 147e3, 154e3)
        concurrent = (1e9 / 23e3, 1e9 / 12e3, 1e9 / 14e3)
        for tasks, anchors in ((1, sequential), (s.concurrency, concurrent)):
            how = "sequential" if tasks == 1 else f"{tasks} concurrent tasks"
            health = l2_health(rl)
            group = await measure_async(
                f"L2 hit (Redis), {how} [{loop}]",
                [
                    Case(
                        RAW,
                        await_loop(raw.get, keys["raw"], tasks),
                        fields={"ref": True, "anchor_ns": anchors[0]},
                    ),
                    Case(RAW_BLOCKING, await_loop(raw_blocking.get, keys["raw"], tasks)),
                    Case(REDLINE_L2, await_loop(rl.get, KEY, tasks)),
                    Case(REDLINE_L2_STRICT, await_loop(strict.get, KEY, tasks)),
                    Case(
                        "cashews redis:// get (default pool: 10)",
                        await_loop(cashews.get, keys["cashews"], tasks),
                        fields={"anchor_ns": anchors[1]},
                    ),
                    Case(
                        "aiocache RedisCache get (default pool: 100)",
                        await_loop(aio.get, keys["aio"], tasks),
                        fields={"anchor_ns": anchors[2]},
                    ),
                ],
                s,
            )
            ours = row(group, REDLINE_L2)
            ours.note = health_note(rl, health)
            ratio = ours.ns / row(group, RAW).ns
            ours.target = f"<= {L2_TARGET_RATIO:.2f}x raw (got {ratio:.2f}x)"
            ours.passed = ratio <= L2_TARGET_RATIO and not ours.note
            results += group
        return results + await get_many_section(raw, rl, loop, s)
    finally:
        await rl.aclose()
        await strict.aclose()
        await raw_blocking.aclose()
        await cashews.close()
        await aio.close()
        await raw.aclose()


async def get_many_section(raw: aredis.Redis, rl: Cache, loop: str, s: Settings) -> list[Result]:
    keys = [f"item:{i}" for i in range(s.batch)]
    raw_keys = [f"bench:raw:{key}" for key in keys]
    await rl.set_many(dict.fromkeys(keys, VALUE))
    await raw.mset(dict.fromkeys(raw_keys, msgpack.packb(VALUE)))
    assert len(await rl.get_many(keys)) == s.batch

    async def rl_singles(batch: list[str]) -> None:
        for key in batch:
            await rl.get(key)

    async def raw_singles(batch: list[str]) -> None:
        for key in batch:
            await raw.get(key)

    singles, many = (
        f"redline {s.batch} x await get (l1=None)",
        f"redline get_many({s.batch}) (l1=None)",
    )
    per_key = {"per": "key"}
    health = l2_health(rl)
    results = await measure_async(
        f"batch of {s.batch} keys (Redis), per key [{loop}]",
        [
            Case(singles, await_loop(rl_singles, keys), s.batch, {"ref": True, **per_key}),
            Case(many, await_loop(rl.get_many, keys), s.batch, per_key),
            Case(
                f"raw redis-py {s.batch} x GET", await_loop(raw_singles, raw_keys), s.batch, per_key
            ),
            Case(
                f"raw redis-py MGET({s.batch})",
                await_loop(raw.mget, raw_keys),
                s.batch,
                {"anchor_ns": 1e9 / 340e3, **per_key},
            ),
        ],
        s,
    )
    ours = row(results, many)
    ours.note = health_note(rl, health)
    speedup = row(results, singles).ns / ours.ns
    ours.target = f">= {GET_MANY_TARGET_SPEEDUP:.0f}x keys/s of singles (got {speedup:.1f}x)"
    ours.passed = speedup >= GET_MANY_TARGET_SPEEDUP and not ours.note
    return results


async def stampede_section(server: RedisServer, s: Settings) -> list[Result]:
    sec = f"stampede: {s.stampede_callers} concurrent callers, one cold key"
    info = raw_client(server.url)
    rl = Cache.from_url(server.url, namespace="bench-stampede")
    cashews = cashews_cache(server.url)
    calls = 0

    async def load(uid: int = 42) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(STAMPEDE_LOAD_S)
        return {**VALUE, "id": uid}

    redis_at = {"cache": RedisCache, "endpoint": server.host, "port": server.port}
    aio_plain = aiocache_cached(ttl=60, namespace="plain", **redis_at)(load)
    aio_lock = aiocache_cached_stampede(ttl=60, lease=2, namespace="lock", **redis_at)(load)
    contenders: list[tuple[str, Callable[[], Awaitable[Any]], int | None]] = [
        ("redline Cache.from_url get_or_set", lambda: rl.get_or_set("gos:user:42", load), None),
        ("redline Cache.from_url @cached", functools.partial(rl.cached(ttl=60)(load), 42), None),
        ("cashews get_or_set", lambda: cashews.get_or_set("gos:user:42", load, expire=60), None),
        ("cashews @cache (protected, default)", functools.partial(cashews(ttl=60)(load), 42), 1),
        ("aiocache @cached (RedisCache)", functools.partial(aio_plain, 42), 1000),
        ("aiocache @cached_stampede (RedLock, lease 2 s)", functools.partial(aio_lock, 42), None),
    ]
    results = []
    try:
        await rl.get("warm")
        await cashews.get("warm")
        for name, call, anchor in contenders:
            calls = 0
            logged = LOGS.counts.copy()
            before = (await info.info("stats"))["total_commands_processed"]
            start = perf_counter()
            try:
                replies = await asyncio.wait_for(
                    asyncio.gather(
                        *(call() for _ in range(s.stampede_callers)), return_exceptions=True
                    ),
                    60.0,
                )
            except TimeoutError:
                replies = None
            wall = perf_counter() - start
            after = (await info.info("stats"))["total_commands_processed"]
            notes = [
                f"wall {wall:.3f} s, {after - before - 1} Redis commands (Lua-internal included)"
            ]
            if replies is None:
                notes.append("did not finish in 60 s")
            else:
                raised = collections.Counter(
                    type(r).__name__ for r in replies if isinstance(r, BaseException)
                )
                wrong = sum(
                    1
                    for r in replies
                    if not isinstance(r, BaseException) and r != {**VALUE, "id": 42}
                )
                notes += [f"{n} callers raised {kind}" for kind, n in raised.items()]
                notes += [f"{wrong} callers got a wrong value"] if wrong else []
            notes += [LOGS.since(logged)] if LOGS.since(logged) else []
            result = Result(
                sec,
                name,
                count=calls,
                show_rate=False,
                anchor_text="" if anchor is None else f"{anchor} call{'s' * (anchor != 1)}",
                note="; ".join(notes),
            )
            if name.startswith("redline"):
                result.target = "1 loader call, no errors"
                result.passed = calls == 1 and len(notes) == 1
            results.append(result)
    finally:
        await aio_plain.cache.close()
        await aio_lock.cache.close()
        await cashews.close()
        await rl.aclose()
        await info.aclose()
    return results


def xproc_section(server: RedisServer, s: Settings) -> list[Result]:
    """Processes sharing one Redis, each with a stampede of its own on the same cold key.

    Each contender gets ``xproc_processes`` fresh workers (benchmarks/_stampede_worker.py,
    plain asyncio; they inherit this process's CPU affinity) that start at one wall-clock
    instant and fire ``xproc_callers`` concurrent calls each; the loader INCRs a Redis counter
    and sleeps ``XPROC_LOAD_S``. Redis commands are counted from the workers' readiness to
    their last caller (connections opened by the stampede included).
    """
    sec = (
        f"cross-process stampede: {s.xproc_processes} processes x {s.xproc_callers} callers, "
        "one cold key"
    )
    contenders = [
        ("redline Cache.from_url(lock=True) get_or_set", "redline-lock", ""),
        ("redline Cache.from_url get_or_set (no lock)", "redline", ""),
        ("cashews @cache(lock=True)", "cashews-lock", "1 call, 2.9–4.8 s"),
        ("aiocache @cached_stampede (default pool)", "aiocache-stampede-default", "374 calls"),
        ("aiocache @cached_stampede (waiting pool of 32)", "aiocache-stampede", "374 calls"),
    ]
    setups = {
        "cashews-lock": "in-process protection on (default), pool: BlockingConnectionPool of 10",
        "aiocache-stampede-default": "RedLock, lease 2 s; pool: redis-py ConnectionPool of 100",
        "aiocache-stampede": "RedLock, lease 2 s; pool: BlockingConnectionPool of 32",
    }
    results = []
    with redis.Redis.from_url(server.url) as client:
        for name, mode, anchor in contenders:
            flush(server)
            reports, commands = run_workers(client, server.url, mode, s)
            calls = int(client.get(XPROC_COUNTER) or 0)
            wall = max(r["done_s"] for r in reports)
            notes = [
                f"wall {wall:.3f} s from the start instant to the last caller done, "
                f"{commands} Redis commands (Lua-internal included)"
            ]
            late = max(r["late_s"] for r in reports)
            if late > 0.05:
                notes.append(f"a worker started {late * 1000:.0f} ms after the start instant")
            if any(r["timed_out"] for r in reports):
                notes.append("did not finish in 60 s")
            raised: collections.Counter[str] = collections.Counter()
            logged: collections.Counter[str] = collections.Counter()
            for r in reports:
                raised.update(r.get("errors", {}))
                logged.update(r["logged"])
            wrong = sum(r.get("wrong", 0) for r in reports)
            notes += [f"{n} callers raised {kind}" for kind, n in raised.items()]
            notes += [f"{wrong} callers got a wrong value"] if wrong else []
            notes += [f"{lib} logged {n} warnings/errors" for lib, n in logged.items()]
            if mode in setups:
                notes.insert(0, setups[mode])
            if mode == "cashews-lock":
                notes.append("anchor: 23k Redis commands")
            result = Result(
                sec,
                name,
                count=calls,
                wall_s=wall,
                commands=commands,
                show_rate=False,
                anchor_text=anchor,
                note="; ".join(notes),
            )
            if mode == "redline-lock":
                result.target = "1 loader call, no errors"
                timed_out = any(r["timed_out"] for r in reports)
                result.passed = calls == 1 and not (raised or wrong or logged or timed_out)
            elif mode == "redline":
                result.ref = True
                result.note += "; reference: single flight per process only, 1 load per process"
            results.append(result)
    return results


def run_workers(
    client: redis.Redis, url: str, mode: str, s: Settings
) -> tuple[list[dict[str, Any]], int]:
    """Run one contender's workers; return their reports and the Redis commands of the run."""
    start_at = time.time() + s.xproc_lead_s
    argv = [
        sys.executable,
        str(XPROC_WORKER),
        mode,
        url,
        repr(start_at),
        str(s.xproc_callers),
        str(XPROC_LOAD_S),
    ]
    procs = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(s.xproc_processes)
    ]
    try:
        ready = [proc.stdout.readline().strip() for proc in procs]  # type: ignore[union-attr]
        if ready != ["ready"] * len(procs):
            raise RuntimeError(f"{mode} workers failed to start: {ready}")
        before = client.info("stats")["total_commands_processed"]
        lines = [proc.stdout.readline() for proc in procs]  # type: ignore[union-attr]
        after = client.info("stats")["total_commands_processed"]
        if not all(lines):
            raise RuntimeError(f"{mode} workers died before reporting")
    finally:
        for proc in procs:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()  # type: ignore[union-attr]  # lets the worker close and exit
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
    return [json.loads(line) for line in lines], after - before - 1


async def hung_section(s: Settings) -> list[Result]:
    """A SIGSTOPped Redis: connections stay open, nothing answers."""
    tier = RedisTier()
    sec = "hung Redis (SIGSTOP), per call"
    budget_s = 2 * tier.timeout
    with RedisServer() as server:
        rl = Cache(l1=None, l2=RedisTier.from_url(server.url), namespace="bench-hung")
        cashews = cashews_cache(server.url)
        aio = aiocache_redis(server)
        for cache in (rl, cashews, aio):
            await cache.set(KEY, VALUE)
            assert await cache.get(KEY) == VALUE
        logged = LOGS.counts.copy()
        server.pause()
        try:
            rl_times, rl_cut = await timed_calls(rl.get, s.hung_calls, 30.0)
            rl_logged = LOGS.since(logged)
            rivals = []
            for name, get, anchor in (
                ("cashews redis:// get", cashews.get, 2.0),
                ("aiocache RedisCache get", aio.get, 10.0),
            ):
                logged = LOGS.counts.copy()
                times, cut = [], None
                if s.rival_hung_calls:
                    times, cut = await timed_calls(get, s.rival_hung_calls, s.rival_hung_guard_s)
                rivals.append((name, times, cut, anchor, LOGS.since(logged)))
        finally:
            server.resume()
        await asyncio.sleep(tier.breaker_duration)
        recovered = await rl.get(KEY) == VALUE
        await rl.aclose()
        await cashews.close()
        await aio.close()

    total = sum(t for t, _ in rl_times)
    first = rl_times[0][0] if rl_times else 0.0
    rest = (total - first) / max(len(rl_times) - 1, 1)
    results = [
        Result(
            sec,
            f"redline Cache(l1=None).get x{s.hung_calls} (timeout {tier.timeout * 1000:.0f} ms)",
            ns=total / max(len(rl_times), 1) * 1e9,
            show_rate=False,
            target=f"{s.hung_calls} calls <= {budget_s * 1000:.0f} ms (got {total * 1000:.1f} ms)",
            passed=rl_cut is None and total <= budget_s and recovered,
            note="; ".join(
                part
                for part in (
                    f"first call {first * 1000:.1f} ms, the other {len(rl_times) - 1} "
                    f"{rest * 1e6:.1f} µs each (breaker open)",
                    f"{'served' if recovered else 'NOT served'} from Redis again "
                    f"{tier.breaker_duration:.0f} s after resume",
                    rl_logged,
                )
                if part
            ),
            samples_ns=[t * 1e9 for t, _ in rl_times],
        )
    ]
    for name, times, cut, anchor, rival_logged in rivals:
        rival = Result(
            sec,
            name,
            show_rate=False,
            anchor_ns=anchor * 1e9,
            samples_ns=[t * 1e9 for t, _ in times],
        )
        if not times and cut is None:
            rival.note = "skipped (--quick)"
        else:
            parts = [f"{t:.2f} s -> {outcome}" for t, outcome in times]
            if times:
                rival.ns = statistics.mean(t for t, _ in times) * 1e9
            if cut is not None:
                parts.append(f"cut off by the {s.rival_hung_guard_s:.0f} s guard")
                if not times:
                    rival.ns = cut * 1e9
                    rival.name += " (more than shown)"
            rival.note = "; ".join(parts + ([rival_logged] if rival_logged else []))
        results.append(rival)
    return results


async def timed_calls(
    get: Callable[[str], Awaitable[Any]], count: int, guard_s: float
) -> tuple[list[tuple[float, str]], float | None]:
    """Time ``count`` sequential gets; stop at ``guard_s`` overall (returns the cut-off time)."""
    times: list[tuple[float, str]] = []

    async def calls() -> None:
        for _ in range(count):
            start = perf_counter()
            try:
                outcome = "value" if await get(KEY) == VALUE else "None"
            except Exception as exc:
                outcome = type(exc).__name__
            times.append((perf_counter() - start, outcome))

    start = perf_counter()
    try:
        await asyncio.wait_for(calls(), guard_s)
    except TimeoutError:
        return times, perf_counter() - start
    return times, None


async def async_suite(server: RedisServer, loop: str, s: Settings) -> list[Result]:
    results = await memory_sections(server, loop, s)
    flush(server)
    return results + await l2_sections(server, loop, s)


# -- machine, output -------------------------------------------------------------------------


def flush(server: RedisServer) -> None:
    with redis.Redis.from_url(server.url) as client:
        client.flushall()


def pin(server: RedisServer, how: str) -> str:
    """``split``: this process and Redis on different CPUs; ``same``: both on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if how == "none":
        return "not pinned"
    if how == "split" and len(cpus) < 2:
        return "not pinned (one CPU)"
    with redis.Redis.from_url(server.url) as client:
        redis_pid = client.info("server")["process_id"]
    redis_cpu = cpus[-1] if how == "split" else cpus[0]
    os.sched_setaffinity(0, {cpus[0]})
    os.sched_setaffinity(redis_pid, {redis_cpu})
    return f"pinned: benchmark on CPU {cpus[0]}, redis-server on CPU {redis_cpu}"


def machine_info(server: RedisServer, pinning: str) -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("redline", "redis", "hiredis", "cashews", "aiocache", "cachetools", "uvloop"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "missing"
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "redis_server": f"{server.version} ({server.binary})",
        "cpu_pinning": pinning,
        "load_avg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "packages": versions,
    }


def fmt_time(ns: float) -> str:
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e4:
        return f"{ns / 1e3:.2f} µs"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_rate(ns: float, per: str) -> str:
    rate = 1e9 / ns
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M {per}/s"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k {per}/s"
    return f"{rate:.0f} {per}/s"


def render(results: list[Result], machine: dict[str, Any], console: Console) -> None:
    table = Table(
        title="redline cache benchmark",
        caption=(
            "per op: median of the rounds (per key for batch rows, mean per call for hung rows)\n"
            "x ref: time / time of the section's ◆ row; x anchor: time / the figure in "
            "shared/ANCHORS.md (other run, other machine)"
        ),
    )
    for header, justify in (
        ("benchmark", "left"),
        ("per op", "right"),
        ("throughput", "right"),
        ("x ref", "right"),
        ("anchor", "right"),
        ("x anchor", "right"),
        ("target", "left"),
        ("result", "center"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    section, ref = None, None
    for result in results:
        if result.section != section:
            if section is not None:
                table.add_section()
            section = result.section
            table.add_row(Text(section, style="bold cyan"))
            ref = next((r for r in results if r.section == section and r.ref), None)
        if result.count is not None:
            per_op = f"{result.count} loader call{'s' * (result.count != 1)}"
            if result.wall_s is not None:
                per_op += f", {result.wall_s:.2f} s"
        else:
            per_op = fmt_time(result.ns) if result.ns is not None else "-"
        ns = result.ns
        verdict = (
            Text("")
            if result.passed is None
            else Text("PASS", style="bold green")
            if result.passed
            else Text("FAIL", style="bold red")
        )
        table.add_row(
            Text("  " + result.name + (" ◆" if result.ref else "")),
            per_op,
            fmt_rate(ns, result.per) if ns and result.show_rate else "",
            f"{ns / ref.ns:.2f}x" if ref and ref.ns and ns else "",
            result.anchor_text or (fmt_time(result.anchor_ns) if result.anchor_ns else ""),
            f"{ns / result.anchor_ns:.2f}x" if result.anchor_ns and ns else "",
            result.target,
            verdict,
        )
    console.print(
        "  ".join(f"[bold]{k}[/]: {v}" for k, v in machine.items() if k != "packages"),
        highlight=False,
    )
    console.print(
        "[bold]packages[/]: " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        highlight=False,
    )
    console.print(table)
    notes = [result for result in results if result.note]
    if notes:
        console.print("[bold]Notes[/]")
        for result in notes:
            console.print(
                f"- {result.section} / {result.name}: {result.note}", markup=False, highlight=False
            )


def _section_order(results: list[Result]) -> Callable[[Result], int]:
    """Keep the asyncio and uvloop variants of a section together, in first-seen order."""
    order: dict[str, int] = {}
    for result in results:
        order.setdefault(result.section.split(" [")[0], len(order))
    return lambda result: order[result.section.split(" [")[0]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds; skip slow rivals")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--pin",
        choices=("none", "split", "same"),
        default="none",
        help="CPU pinning of this process and Redis (default: none, the scheduler decides)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this group of sections (repeatable; default: all)",
    )
    args = parser.parse_args()
    s = QUICK if args.quick else FULL
    only = set(args.only or SECTIONS)
    console = Console(width=None if sys.stdout.isatty() else 170)
    logging.getLogger().addHandler(LOGS)

    started = perf_counter()
    results: list[Result] = []
    with RedisServer() as server:
        machine = machine_info(server, pin(server, args.pin))
        console.print(f"[dim]Redis {server.version} on {server.url}; {machine['cpu_pinning']}[/]")
        if "sync" in only:
            console.print("[dim]sync sections...[/]")
            results += sync_sections(server, s)
        for loop, factory in (("asyncio", None), ("uvloop", uvloop.new_event_loop)):
            if "async" in only:
                flush(server)
                console.print(f"[dim]async sections on {loop}...[/]")
                with asyncio.Runner(loop_factory=factory) as runner:
                    results += runner.run(async_suite(server, loop, s))
        if "stampede" in only:
            flush(server)
            console.print("[dim]stampede...[/]")
            results += asyncio.run(stampede_section(server, s))
        if "xproc" in only:
            console.print("[dim]cross-process stampede...[/]")
            results += xproc_section(server, s)
    if "hung" in only:
        console.print("[dim]hung Redis...[/]")
        results += asyncio.run(hung_section(s))
    machine["duration_s"] = round(perf_counter() - started, 1)
    machine["load_avg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results.sort(key=_section_order(results))
    render(results, machine, console)
    if args.json:
        report = {
            "machine": machine,
            "settings": asdict(s),
            "sections": sorted(only, key=SECTIONS.index),
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        console.print(f"[dim]results written to {args.json}[/]")
    return 0 if all(result.passed is not False for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
