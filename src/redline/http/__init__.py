"""HTTP caching building blocks: Cache-Control policies, ETags and conditional requests.

These are pure functions and values; the ASGI middleware and the response cache built on them
come next (issue 5).
"""

from redline.http._conditional import (
    etag_matches,
    http_date,
    not_modified,
    parse_etags,
    strong_etag,
    weak_etag,
)
from redline.http._middleware import CacheRouteError, HTTPCacheMiddleware, cache_policy
from redline.http._policy import (
    CachePolicy,
    CachePolicyError,
    Headers,
    Visibility,
    parse_cache_control,
    shared_cache_may_store,
)

__all__ = [
    "CachePolicy",
    "CachePolicyError",
    "CacheRouteError",
    "HTTPCacheMiddleware",
    "Headers",
    "Visibility",
    "cache_policy",
    "etag_matches",
    "http_date",
    "not_modified",
    "parse_cache_control",
    "parse_etags",
    "shared_cache_may_store",
    "strong_etag",
    "weak_etag",
]
