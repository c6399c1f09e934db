"""``redline cache-tour``: a measured tour of the two-tier cache.

Each step states a claim, measures it against a real Redis and prints the figure with a
verdict; the command exits non-zero if any claim fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from redline._servers import RedisServer
from redline.cache import Cache, MemoryTier, RedisTier

DB_LATENCY = 0.02  # the simulated database query behind every loader


@dataclass
class Step:
    claim: str
    figure: str
    ok: bool


@contextlib.contextmanager
def _redis(url: str | None) -> Iterator[tuple[str, RedisServer | None]]:
    if url:
        yield url, None
        return
    with RedisServer() as server:
        yield server.url, server


def _per_call(total: float, n: int) -> str:
    per = total / n
    return (
        f"{per * 1e9:.0f} ns"
        if per < 1e-5
        else f"{per * 1e6:.1f} µs"
        if per < 1e-3
        else f"{per * 1e3:.1f} ms"
    )


async def _tour(url: str, server: RedisServer | None, console: Console) -> list[Step]:
    steps: list[Step] = []
    loads = 0

    async def fund(fund_id: int) -> dict[str, object]:
        nonlocal loads
        loads += 1
        await asyncio.sleep(DB_LATENCY)
        return {"id": fund_id, "name": f"Fund {fund_id}", "called": 125_000.0}

    tier = RedisTier.from_url(url, breaker_duration=0.5)
    app = Cache(l1=MemoryTier(), l2=tier, namespace="tour", lock=True)
    # A second process, in effect: its own L1, invalidation stream and load lock.
    other = Cache(l1=MemoryTier(), l2=tier, namespace="tour", lock=True)
    try:
        await app.clear()
        await asyncio.gather(app.get("warm-up"), other.get("warm-up"))
        await asyncio.sleep(0.2)  # let both invalidation listeners subscribe

        start = time.perf_counter()
        await app.get_or_set("fund:7", lambda: fund(7), tags=["fund:7"])
        cold = time.perf_counter() - start
        steps.append(Step("a miss runs the loader (20 ms query)", _per_call(cold, 1), loads == 1))

        n = 100_000
        start = time.perf_counter()
        for _ in range(n):
            await app.get("fund:7")
        l1 = time.perf_counter() - start
        steps.append(
            Step("an L1 hit costs under two microseconds", _per_call(l1, n), l1 / n < 2e-6)
        )

        start = time.perf_counter()
        value = await other.get("fund:7")
        l2 = time.perf_counter() - start
        steps.append(
            Step("another process reads it from Redis (L2)", _per_call(l2, 1), value is not None)
        )

        loads = 0
        await asyncio.gather(*(app.get_or_set("fund:8", lambda: fund(8)) for _ in range(1000)))
        steps.append(
            Step("1000 concurrent misses run the loader once", f"{loads} load", loads == 1)
        )

        loads = 0
        await asyncio.gather(
            *(cache.get_or_set("fund:9", lambda: fund(9)) for cache in (app, other) * 500)
        )
        steps.append(
            Step("…and once across two processes (lock=True)", f"{loads} load", loads == 1)
        )

        await app.invalidate_tags("fund:7")
        await asyncio.sleep(0.05)
        stale = [await app.get("fund:7"), await other.get("fund:7")]
        steps.append(
            Step(
                "invalidating tag fund:7 drops it in every tier and process",
                "O(1)",
                stale == [None, None],
            )
        )

        if server is not None:
            steps.append(await _outage(app, server, fund))
    finally:
        await app.aclose()
        await other.aclose()
    _print_stats(console, app)
    return steps


async def _outage(app: Cache, server: RedisServer, fund: Callable[[int], object]) -> Step:
    server.pause()
    try:
        start = time.perf_counter()
        for i in range(50):
            await app.get_or_set(f"fund:{100 + i % 5}", lambda i=i: fund(100 + i % 5))
        hung = time.perf_counter() - start
    finally:
        server.resume()
    breaker = app.stats()["l2"]["breaker"]
    return Step(
        "Redis hung (SIGSTOP): 50 calls keep working, breaker opens",
        f"{hung:.2f} s total, breaker opened {breaker['opened']}x",
        breaker["opened"] >= 1 and hung < 50 * 0.05,
    )


def _print_stats(console: Console, cache: Cache) -> None:
    stats = cache.stats()
    l2_p50 = stats["l2"]["latency"].get("p50_us", 0)
    console.print(
        f"hit ratio {stats['hit_ratio']:.2%} · loads {stats['loads']} · "
        f"L1 entries {stats['l1']['entries']} · L2 p50 {l2_p50:.0f} µs"
    )


def _reachable(url: str) -> bool:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def run(redis_url: str | None = None) -> int:
    """Run the tour; return the exit code (0 when every claim held)."""
    console = Console()
    url = redis_url
    if url and not _reachable(url):
        console.print(f"[red]cannot reach Redis at {url}[/]: start it, or omit --redis-url")
        return 2
    with _redis(url) as (real_url, server):
        source = "a throwaway redis-server" if server else real_url
        console.print(f"[bold]redline cache tour[/] against {source}")
        steps = asyncio.run(_tour(real_url, server, console))
    table = Table(title="What the two-tier cache buys")
    table.add_column("claim")
    table.add_column("measured", justify="right")
    table.add_column("", justify="center")
    for step in steps:
        table.add_row(step.claim, step.figure, "[green]PASS[/]" if step.ok else "[red]FAIL[/]")
    console.print(table)
    return 0 if all(step.ok for step in steps) else 1
