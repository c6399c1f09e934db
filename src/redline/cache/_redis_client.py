"""redis-py, imported on first use: the Redis tier is an optional extra."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

from redline.cache._exceptions import RedlineCacheError


def load_redis(flavour: str, socket_timeouts: bool) -> SimpleNamespace:
    """redis-py's classes for ``flavour`` ("redis" or "redis.asyncio"), or a clear error."""
    try:
        client = importlib.import_module(flavour)
        retry = importlib.import_module(f"{flavour}.retry")
        from redis import backoff, exceptions
    except ImportError:  # pragma: no cover - depends on the environment
        raise RedlineCacheError(
            "the Redis tier needs redis-py: pip install 'redline[redis]'"
        ) from None
    return SimpleNamespace(
        ConnectionPool=client.ConnectionPool,
        Retry=retry.Retry,
        NoBackoff=backoff.NoBackoff,
        exceptions=exceptions,
        socket_timeouts=socket_timeouts,
    )
