"""HTTP caching for the demo (``Settings.http_cache``): which route may be cached where.

Every read of public data (funds, capital calls, the dashboard, workflows, the retry queue)
is ``public, max-age=0, s-maxage=60``: browsers keep a copy but revalidate it on
every use (``If-None-Match``, answered 304 from the response cache without the handler), and
shared caches (the response cache, a CDN) keep it for a minute at most. Each response carries
the same tags as the data it was built from (the ``_caching`` table), as surrogate keys and in
the response cache, which shares the data cache: the write paths' ``invalidate_*`` helpers
therefore drop cached responses in the same call that drops cached rows, and a read after a
write never sees the old value. Searches are the exception their route states: ``s-maxage``
is ``Settings.search_lag`` (10 s), tagged ``search``, which no write invalidates.

A call list or a live dashboard filtered by ``fund_id`` is tagged with that fund, like its
data entry (a dashboard from the materialized view only with ``dashboards``, which its refresh
invalidates), so a write to one fund's calls leaves every other fund's lists cached. The
policies are chosen by a callable (the endpoint, plus that query parameter), and kept per fund
id: at most one ``CachePolicy`` object per route and fund.

``/me`` is private to its user: ``private, no-cache``, an ETag and 304s for the user's own
browser, never stored by the response cache or a CDN. Everything else (writes, ``/auth``,
``/health``, ``/metrics``) gets no policy and passes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from redline.demo._dashboard import dashboard_tags
from redline.http import CachePolicy, HTTPCacheMiddleware

Scope = MutableMapping[str, Any]

SHARED_SECONDS = 60
MAX_FUND_POLICIES = 10_000


def public(*tags: str, shared: int = SHARED_SECONDS) -> CachePolicy:
    return CachePolicy(visibility="public", max_age=0, s_maxage=shared, tags=tags)


PRIVATE = CachePolicy(visibility="private", no_cache=True)

# Endpoint function name -> policy, or a builder taking the fund id from the query (or None).
_STATIC: dict[str, CachePolicy] = {
    "list_funds": public("funds"),
    "get_fund": public("fund:{fund_id}"),
    "get_call": public("call:{call_id}"),
    "list_payments": public("call:{call_id}"),
    "list_workflows": public("workflows"),
    "get_workflow": public("workflow:{workflow_id}"),
    "list_executions": public("workflow:{workflow_id}:runs"),
    "list_retries": public("retries"),
    "me": PRIVATE,
}
_BY_FUND: dict[str, Callable[[str, int | None], tuple[str, ...]]] = {
    "list_calls": lambda source, fund: (f"fund:{fund}",) if fund is not None else ("calls",),
    "dashboard": dashboard_tags,
}


def _fund_id(scope: Scope) -> int | None:
    raw = scope.get("query_string", b"")
    if b"fund_id=" not in raw:
        return None
    values = parse_qs(raw.decode("latin-1")).get("fund_id")
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None  # FastAPI answers 422; nothing is cached


class DemoPolicies:
    """The ``policies`` callable of the demo's HTTPCacheMiddleware."""

    def __init__(self, dashboard_source: str = "live", search_lag: int = 10) -> None:
        self.dashboard_source = dashboard_source
        # Searches state their lag instead of being invalidated (see search_calls).
        self._static = {**_STATIC, "search_calls": public("search", shared=search_lag)}
        self._by_fund: dict[tuple[str, int | None], CachePolicy] = {}

    def __call__(self, scope: Scope) -> CachePolicy | None:
        endpoint = scope.get("endpoint")
        name = getattr(endpoint, "__name__", None)
        if name is None:
            return None
        policy = self._static.get(name)
        if policy is not None:
            return policy
        tags_of = _BY_FUND.get(name)
        if tags_of is None:
            return None
        fund = _fund_id(scope)
        key = (name, fund)
        policy = self._by_fund.get(key)
        if policy is None:
            if len(self._by_fund) >= MAX_FUND_POLICIES:
                self._by_fund.clear()
            policy = self._by_fund[key] = public(*tags_of(self.dashboard_source, fund))
        return policy


def add_http_cache(
    app: Any,
    cache: Any | None,
    session_cookie: str,
    dashboard_source: str = "live",
    search_lag: int = 10,
) -> None:
    """Add HTTPCacheMiddleware to ``app``; with a redline ``Cache``, also the response cache.

    Only the session cookie makes a request personal: other cookies (analytics, preferences)
    do not keep anonymous readers out of the shared cache.
    """
    options: dict[str, Any] = {
        "policies": DemoPolicies(dashboard_source, search_lag),
        "session_cookies": (session_cookie,),
    }
    if cache is not None:
        options["cache"] = cache
    app.add_middleware(HTTPCacheMiddleware, **options)
