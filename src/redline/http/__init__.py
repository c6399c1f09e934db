"""HTTP caching for ASGI apps: Cache-Control policies, ETags and 304s (before the handler with
a validator), a response cache on redline.cache, and surrogate keys for CDN purge.

See docs/http-cache.md.
"""

from redline.http._compress import (
    CompressionError,
    CompressionMiddleware,
    is_compressible,
    negotiate_encoding,
)
from redline.http._conditional import (
    etag_matches,
    http_date,
    not_modified,
    parse_etags,
    parse_http_date,
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
from redline.http._purge import (
    CloudflarePurger,
    FastlyPurger,
    PurgeAdapter,
    PurgeError,
    PurgeOutcome,
    Purger,
    PurgeResult,
    SyncPurger,
    VarnishPurger,
)
from redline.http._response_cache import filling_response_cache
from redline.http._surrogate import SurrogateKeyError, check_surrogate_tags, surrogate_headers

__all__ = [
    "CloudflarePurger",
    "CompressionError",
    "CompressionMiddleware",
    "FastlyPurger",
    "PurgeAdapter",
    "PurgeError",
    "PurgeOutcome",
    "PurgeResult",
    "Purger",
    "SyncPurger",
    "VarnishPurger",
    "CachePolicy",
    "CachePolicyError",
    "CacheRouteError",
    "HTTPCacheMiddleware",
    "Headers",
    "SurrogateKeyError",
    "Visibility",
    "cache_policy",
    "check_surrogate_tags",
    "etag_matches",
    "filling_response_cache",
    "http_date",
    "is_compressible",
    "negotiate_encoding",
    "not_modified",
    "parse_cache_control",
    "parse_etags",
    "parse_http_date",
    "shared_cache_may_store",
    "strong_etag",
    "surrogate_headers",
    "weak_etag",
]
