"""Cache-aside for the demo's read paths, and the invalidation every write path calls.

Reads go through ``get_or_set(key, loader, tags=...)``; the cached value is the response body
(JSON bytes), so a hit costs no query, no model validation and no serialization. Tags say
what an entry depends on:

================================  =========================================================
tag                               carried by
================================  =========================================================
``fund:{id}``                     the fund's detail (totals per status), call lists
                                  filtered by that fund, the fund's dashboard
``funds``                         fund lists
``call:{id}``                     the call's detail and its payments
``calls``                         call lists not filtered by fund
``search``                        searches: never invalidated, cached ``search_lag``
                                  seconds (10), the lag the search route states
``dashboard``                     the dashboard over all funds
``dashboards``                    every dashboard (a refresh of the view changes them all)
``workflow:{id}``                 the workflow's detail
``workflow:{id}:runs``            the workflow's execution history
``workflows``                     workflow lists
``retries``                       the retry queue
``investor:{id}``                 ``/me`` of the investor's users (their holdings)
``user:{id}``                     everything private to the user (``/me``)
``session:{hash}``                the session behind a token (cleared by logout)
================================  =========================================================

Private data is cached under keys that contain the user's id (``user:{id}:me``), which is
taken from the verified session, never from the request, so one user's entry can never be
looked up for another.

Every write path calls one of the named helpers below *after* its transaction commits: an
invalidation before the commit could be followed by a read of the old row that is cached
again. The cache's own rule (an entry loaded before an invalidation of its tag is stale)
covers a read that started before the write and finishes after it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from redline.cache import Cache, MemoryTier, RedisTier


class CacheLike(Protocol):
    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Any],
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> Any: ...

    async def invalidate_tags(self, *tags: str) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def aclose(self) -> None: ...


class NoCache:
    """``cache="none"``: every read runs its loader; invalidations have nothing to do."""

    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Any | Awaitable[Any]],
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> Any:
        value = loader()
        return await value if inspect.isawaitable(value) else value

    async def invalidate_tags(self, *tags: str) -> None:
        return None

    async def delete(self, key: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


L1_ENTRIES = 50_000
# Redis answers in well under a millisecond, but on a machine where the app, PostgreSQL, Redis
# and the load generator share two cores, a busy event loop can take longer than the default
# 50 ms to notice the answer: the breaker would then open for the loop's delay, not Redis's.
REDIS_TIMEOUT_S = 0.25


def build_cache(mode: str, *, redis_url: str | None, namespace: str) -> CacheLike:
    """The cache for ``Settings.cache``: none, L1 only, or L1 in front of Redis."""
    if mode == "none":
        return NoCache()
    if mode == "l1":
        return Cache.memory(namespace=namespace, max_entries=L1_ENTRIES)
    assert redis_url is not None
    return Cache(
        l1=MemoryTier(max_entries=L1_ENTRIES),
        l2=RedisTier.from_url(redis_url, timeout=REDIS_TIMEOUT_S),
        namespace=namespace,
    )


async def invalidate_capital_call(
    cache: CacheLike, call_id: int, fund_id: int, investor_id: int
) -> None:
    """After a call (or its payments) changed: its detail, its fund, its investor's users'
    holdings, the lists and the dashboards."""
    await cache.invalidate_tags(
        f"call:{call_id}", f"fund:{fund_id}", f"investor:{investor_id}", "calls", "dashboard"
    )


async def invalidate_user(cache: CacheLike, user_id: int) -> None:
    """After a user's profile or sessions changed: everything cached privately for them."""
    await cache.invalidate_tags(f"user:{user_id}")


async def invalidate_workflow(cache: CacheLike, workflow_id: int) -> None:
    """After a workflow itself changed (or was created): its detail and the lists."""
    await cache.invalidate_tags(f"workflow:{workflow_id}", "workflows")


async def invalidate_workflow_runs(cache: CacheLike, workflow_id: int) -> None:
    """After a run or retry of a workflow: its execution history and the retry queue; the
    workflow's own detail does not change."""
    await cache.invalidate_tags(f"workflow:{workflow_id}:runs", "retries")


async def invalidate_dashboard(cache: CacheLike) -> None:
    """After the dashboard's materialized view was refreshed."""
    await cache.invalidate_tags("dashboards")
